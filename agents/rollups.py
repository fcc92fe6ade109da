"""The roll-up task's work: count the steps of every hour that has closed into ``StepHour``.

One writer: the periodic task (``agents.tasks.rollup``). It locks the watermark row, appends
the hours from the watermark up to the last whole hour that ended ``GRACE`` ago, and moves the
watermark, all in one transaction, so a second copy running at once waits and then finds
nothing to do, and a re-run changes nothing. A step's ``created_at`` is taken in the process
that writes it, before its transaction commits: the grace, a minute more than a task may live
(``CELERY_TASK_TIME_LIMIT``, after which the worker kills it and its transaction rolls back),
lets every transaction that stamped a step in an hour end before that hour is counted.
Until the task has run, and for the current hour always, the reads count the steps themselves
(``agents.rollup_reads.step_groups``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import Step
from agents.rollup_models import STEPS, RollupMark, StepHour
from agents.rollup_reads import step_hour_rows

GRACE = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def steps_rollup(*, now: datetime | None = None) -> dict[str, int]:
    """Roll up the closed hours not rolled up yet; returns how many hours and rows it added."""
    target = _hour((now or timezone.now()) - GRACE)
    with transaction.atomic():
        RollupMark.objects.get_or_create(name=STEPS, defaults={"through": _first_hour(target)})
        mark = RollupMark.objects.select_for_update().get(name=STEPS)
        start = mark.through
        if start >= target:
            return {"rollup_hours": 0, "rollup_rows": 0}
        rows = [
            StepHour(
                hour=row["hour"],
                agent_id=row["agent"],
                kind=row["kind"],
                model=row["model"],
                bucket=row["bucket"],
                steps=row["n"],
                latency_ms=row["latency"] or 0,
                prompt_tokens=row["prompt"] or 0,
                completion_tokens=row["completion"] or 0,
                # To the column's places: SQLite sums decimals as floats.
                cost=Decimal(row["spent"] or 0).quantize(Decimal("0.000001")),
            )
            for row in step_hour_rows(since=start, until=target)
        ]
        StepHour.objects.bulk_create(rows, batch_size=500)
        RollupMark.objects.filter(name=STEPS).update(through=target)
    return {"rollup_hours": int((target - start) / timedelta(hours=1)), "rollup_rows": len(rows)}


def _first_hour(target: datetime) -> datetime:
    """Where the first roll-up starts: the hour of the oldest step (``target`` with none)."""
    oldest = Step.objects.order_by("created_at").values_list("created_at", flat=True).first()
    return min(_hour(oldest), target) if oldest is not None else target
