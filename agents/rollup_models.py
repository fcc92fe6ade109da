"""Hourly roll-ups of the steps, and the reads that add the live tail to them.

A step is written once and its measured fields (agent, kind, model, latency, tokens, cost, time)
never change, so the steps of an hour that has closed can be counted once: ``StepHour`` holds,
per UTC hour, agent, kind, model and latency bucket, the number of steps and their sums. The
roll-up task (``agents.rollups``, the only writer) appends whole hours and moves the watermark
``RollupMark.through`` in the same transaction; rows before the watermark are never rewritten.

A read is one statement (one snapshot on either database): the roll-up rows before the watermark
UNION ALL the steps themselves from the watermark on, grouped the same way. Every step is in
exactly one of the two, so what the dashboard and /metrics show is what a direct count of the
steps would give, whenever the roll-up last ran, and the rows read depend on the hours and the
groups, never on how many steps there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import models
from django.db.models import Case, Count, F, IntegerField, QuerySet, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce

# The upper bounds of a step's latency in milliseconds: config.metrics' STEP_BUCKETS (seconds).
STEP_BOUNDS_MS: tuple[int, ...] = (5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
STEPS = "steps"
# Before any roll-up: every step is in the tail.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


class RollupMark(models.Model):
    """How far a roll-up has counted: every row created before ``through`` is in its table."""

    name = models.CharField(max_length=32, primary_key=True)
    through = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} rolled up through {self.through:%Y-%m-%d %H:%M}"


class StepHour(models.Model):
    """The steps created in one UTC hour, by agent, kind, model and latency bucket.

    ``bucket`` is the index of the first of ``STEP_BOUNDS_MS`` the latency is at or under, and
    ``len(STEP_BOUNDS_MS)`` past the last one.
    """

    hour = models.DateTimeField()
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=12)
    model = models.CharField(max_length=100, blank=True)
    bucket = models.PositiveSmallIntegerField()
    steps = models.PositiveIntegerField()
    latency_ms = models.PositiveBigIntegerField()
    prompt_tokens = models.PositiveBigIntegerField()
    completion_tokens = models.PositiveBigIntegerField()
    cost = models.DecimalField(max_digits=18, decimal_places=6)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "agent", "kind", "model", "bucket"], name="stephour_unique_group")
        ]

    def __str__(self) -> str:
        return f"steps of agent {self.agent_id} at {self.hour:%Y-%m-%d %H}:00"


def latency_bucket(field_name: str = "latency_ms") -> Case:
    """The index of the latency bucket of a step (``StepHour.bucket``), in SQL."""
    whens = [When(**{f"{field_name}__lte": bound}, then=Value(i)) for i, bound in enumerate(STEP_BOUNDS_MS)]
    return Case(*whens, default=Value(len(STEP_BOUNDS_MS)), output_field=IntegerField())


def steps_through() -> Coalesce:
    """The steps' watermark as a subquery of the statement that reads: one snapshot for both parts."""
    mark = RollupMark.objects.filter(name=STEPS).values("through")[:1]
    return Coalesce(Subquery(mark), Value(BEGINNING), output_field=models.DateTimeField())


# The groups a read may ask for: the expression over ``StepHour`` and the one over ``Step``.
GROUPS: dict[str, tuple[Any, Any]] = {
    "by_agent": (F("agent_id"), F("run__agent_id")),
    "by_kind": (F("kind"), F("kind")),
    "by_model": (F("model"), F("model")),
    "by_le": (F("bucket"), latency_bucket()),
}


def step_groups(
    *,
    group_by: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    agent_id: int | None = None,
    extra: dict[str, tuple[Any, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Steps created in [since, until), grouped by ``group_by`` (names of ``GROUPS`` or of
    ``extra``), counted (``n``) and summed (``latency``, ``prompt``, ``completion``, ``spent``): the
    roll-up before the watermark and the steps from it on, in one statement. A group may come
    twice (once from each part): callers add them up.

    ``extra`` names more groups as (expression over ``StepHour.hour``, over ``Step.created_at``),
    such as the dashboard's window bucket. ``since`` and ``until`` must be whole hours for the
    roll-up part to cut where the steps do."""
    from agents.models import Step

    groups = {**GROUPS, **(extra or {})}
    through = steps_through()
    hours: QuerySet[Any] = StepHour.objects.filter(hour__lt=through)
    tail: QuerySet[Any] = Step.objects.filter(created_at__gte=through)
    if since is not None:
        hours, tail = hours.filter(hour__gte=since), tail.filter(created_at__gte=since)
    if until is not None:
        hours, tail = hours.filter(hour__lt=until), tail.filter(created_at__lt=until)
    if agent_id is not None:
        hours, tail = hours.filter(agent_id=agent_id), tail.filter(run__agent_id=agent_id)
    # Only annotations, in the same order on both sides: the columns of a UNION go by position.
    rolled = (
        hours.order_by()
        .annotate(**{name: groups[name][0] for name in group_by})
        .values(*group_by)
        .annotate(
            n=Sum("steps"),
            latency=Sum("latency_ms"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            spent=Sum("cost"),
        )
    )
    live = (
        tail.order_by()
        .annotate(**{name: groups[name][1] for name in group_by})
        .values(*group_by)
        .annotate(
            n=Count("pk"),
            latency=Sum("latency_ms"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            spent=Sum("cost"),
        )
    )
    return list(rolled.union(live, all=True))


def step_hour_rows(*, since: datetime, until: datetime) -> QuerySet[Any]:
    """What ``StepHour`` holds for the steps created in [since, until), whole UTC hours: the roll-up's query."""
    from django.db.models.functions import TruncHour

    from agents.models import Step

    return (
        Step.objects.filter(created_at__gte=since, created_at__lt=until)
        .order_by()
        .annotate(hour=TruncHour("created_at", tzinfo=UTC), agent=F("run__agent_id"), bucket=latency_bucket())
        .values("hour", "agent", "kind", "model", "bucket")
        .annotate(
            n=Count("pk"),
            latency=Sum("latency_ms"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            spent=Sum("cost"),
        )
    )
