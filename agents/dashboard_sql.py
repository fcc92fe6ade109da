"""SQL expressions of the dashboard's reads (agents.dashboard) that Django does not ship, plain
SQL on both databases."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import Case, F, FloatField, Func, IntegerField, Subquery, Value, When


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
