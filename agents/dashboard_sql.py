"""SQL expressions of the dashboard's reads (agents.dashboard) that Django does not ship, plain
SQL on both databases."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import Case, DateTimeField, F, FloatField, Func, IntegerField, QuerySet, Subquery, Value, When


def bucket_of(field_name: str, starts: Sequence[datetime]) -> Case:
    """The index of the bucket a row's ``field_name`` falls in (``starts`` oldest first; rows
    before the first start get NULL): the latest start it is not before."""
    whens = [When(**{f"{field_name}__gte": start}, then=Value(i)) for i, start in reversed(list(enumerate(starts)))]
    return Case(*whens, default=None, output_field=IntegerField())


class SecondsBetween(Func):
    """Seconds from one time field to another, worked out by the database itself.

    ``config.metrics.between`` subtracts the fields as a duration, which SQLite does in a Python
    function called for every row (and thirteen times a row in a histogram); this is plain SQL on
    both databases, so the decision histogram costs what a count costs.
    """

    output_field = FloatField()
    # PostgreSQL: the interval end - start, in seconds.
    template = "EXTRACT(EPOCH FROM (%(expressions)s))"
    arg_joiner = " - "

    def __init__(self, start: str, end: str) -> None:
        super().__init__(F(end), F(start))

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )


class PerGroup(Subquery):
    """A correlated subquery on grouped columns only, in the SELECT of a grouped query: evaluated
    once a group. A plain ``Subquery`` there is added to the GROUP BY, so PostgreSQL runs it for
    every row before grouping."""

    def get_group_by_cols(self) -> list[Any]:
        return []


class HourOf(Func):
    """The start of the UTC hour a time field falls in: ``date_bin`` on PostgreSQL, on SQLite the
    stored text's first 13 characters and ":00:00" (``Trunc`` is a Python function there). Cheaper
    to group by than a CASE over 24 hour starts, each row compared with every start until one matches.

    ``date_bin`` counts whole hours from a UTC midnight: arithmetic on the stored instant, about
    half the cost a row of ``date_trunc('hour', ..., 'UTC')``, which converts every row to the zone
    and back; the same hour starts (PostgreSQL 14 or later)."""

    output_field = DateTimeField()
    template = "date_bin('1 hour', %(expressions)s, TIMESTAMPTZ '2000-01-01 00:00:00+00')"

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="(substr(%(expressions)s, 1, 13) || ':00:00')", **extra)


class Buckets:
    """Which bucket of a window a row falls in. Hours are grouped by their UTC hour (``HourOf``) and
    placed here, the latest bucket start at or before the hour (exact in a time zone a whole number
    of hours from UTC); days by a CASE over the day starts, exact in any zone."""

    def __init__(self, starts: Sequence[datetime], *, hourly: bool) -> None:
        self.starts = list(starts)
        self.hourly = hourly
        self._utc = [start.astimezone(UTC) for start in self.starts]

    def of(self, field_name: str) -> Func | Case:
        return HourOf(field_name) if self.hourly else bucket_of(field_name, self.starts)

    def position(self, key: Any) -> int | None:
        if not self.hourly or key is None:
            return key  # type: ignore[no-any-return]
        index = bisect_right(self._utc, key) - 1
        return index if index >= 0 else None


def grouping_sets(
    grouped: QuerySet[Any], *, sets: Sequence[Sequence[int]], marker: str, ranked: str, top: int
) -> list[dict[str, Any]]:
    """PostgreSQL: ``grouped`` (a ``values().annotate()`` query) grouped by each of ``sets`` (1-based
    positions of its columns) in one pass over its rows, as ``GROUP BY GROUPING SETS`` does; a column
    a set does not group by is NULL in that set's rows. ``marker`` names a column of the first set
    that is never NULL in its rows and not in the last set: NULL there marks a row of the last set.
    Of the last set only the first ``top`` rows in the order of ``ranked`` (SQL over the columns of
    ``g``) are kept, each with its ``place`` from 1; the other rows have a NULL ``place``."""
    connection = connections[grouped.db]
    sql, params = grouped.query.sql_with_params()
    head, _, keys = sql.rpartition(" GROUP BY ")
    if not head or not all(part.strip().isdigit() for part in keys.split(",")):
        raise ValueError(f"expected a query grouped by its columns' positions: {sql}")
    groups = ", ".join("(" + ", ".join(str(position) for position in group) + ")" for group in sets)
    column = "g." + connection.ops.quote_name(marker)
    wrapped = (
        f"SELECT * FROM (SELECT g.*, CASE WHEN {column} IS NULL THEN ROW_NUMBER() OVER "  # noqa: S608 - compiled by Django, parameters apart
        f"(PARTITION BY {column} IS NULL ORDER BY {ranked}) END AS place "
        f"FROM ({head} GROUP BY GROUPING SETS ({groups})) g) ranked WHERE place IS NULL OR place <= %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(wrapped, (*params, top))
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
