"""Reads of the steps' hourly roll-up (``agents.rollup_models``) with the live tail added.

A read takes the watermark (one query), then the roll-up rows before it UNION ALL the steps
themselves from it on, grouped the same way (a second). Every step is in exactly one of the two:
the hours before the watermark it read are never rewritten, so a roll-up that moves the
watermark between the two queries changes neither part. What the dashboard and /metrics show is
what a direct count of the steps would give, whenever the roll-up last ran, and the rows read
depend on the hours not rolled up yet and the groups, never on how many steps there are. (The
watermark goes in as a value, not a subquery: PostgreSQL plans the tail's range on the
``created_at`` index only when it knows the bound.)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db.models import Case, Count, F, IntegerField, QuerySet, Sum, Value, When
from django.db.models.functions import TruncHour

from agents.models import Step
from agents.rollup_models import BEGINNING, STEP_BOUNDS_MS, STEPS, RollupMark, StepHour


def latency_bucket(field_name: str = "latency_ms") -> Case:
    """The index of the latency bucket of a step (``StepHour.bucket``), in SQL."""
    whens = [When(**{f"{field_name}__lte": bound}, then=Value(i)) for i, bound in enumerate(STEP_BOUNDS_MS)]
    return Case(*whens, default=Value(len(STEP_BOUNDS_MS)), output_field=IntegerField())


def steps_through() -> datetime:
    """The steps' watermark: every step created before it is in ``StepHour``."""
    through = RollupMark.objects.filter(name=STEPS).values_list("through", flat=True).first()
    return through or BEGINNING


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
    roll-up before the watermark and the steps from it on (two queries). A group may come
    twice (once from each part): callers add them up.

    ``extra`` names more groups as (expression over ``StepHour.hour``, over ``Step.created_at``),
    such as the dashboard's window bucket. ``since`` and ``until`` must be whole hours for the
    roll-up part to cut where the steps do."""
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
    def grouped(rows: QuerySet[Any], side: int, n: Sum | Count) -> QuerySet[Any]:
        sums: QuerySet[Any] = (
            rows.order_by()
            .annotate(**{name: groups[name][side] for name in group_by})
            .values(*group_by)
            .annotate(
                n=n,
                latency=Sum("latency_ms"),
                prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"),
                spent=Sum("cost"),
            )
        )
        return sums

    rolled, live = grouped(hours, 0, Sum("steps")), grouped(tail, 1, Count("*"))
    return list(rolled.union(live, all=True))


def step_hour_rows(*, since: datetime, until: datetime) -> QuerySet[Any]:
    """What ``StepHour`` holds for the steps created in [since, until), whole UTC hours: the roll-up's query."""
    return (
        Step.objects.filter(created_at__gte=since, created_at__lt=until)
        .order_by()
        .annotate(hour=TruncHour("created_at", tzinfo=UTC), agent=F("run__agent_id"), bucket=latency_bucket())
        .values("hour", "agent", "kind", "model", "bucket")
        .annotate(
            n=Count("*"),
            latency=Sum("latency_ms"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            spent=Sum("cost"),
        )
    )
