"""SQL expressions of the dashboard's reads (agents.dashboard) that Django does not ship, plain
SQL on both databases."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db.models import Case, DateTimeField, F, FloatField, Func, IntegerField, Subquery, Value, When


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
