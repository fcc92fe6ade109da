"""The sweeper's half for runs: ring again what a lost doorbell or a dead worker left behind."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import Run, RunStatus, ToolCallStatus
from agents.runtime.lifecycle import enqueue_advance
from agents.runtime.status import DECIDED
from approvals.models import ApprovalRequest


def runs_recover(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue runs whose lease expired or whose enqueue was lost, and runs whose approval is
    decided but which still wait (the resume was lost). Safe to run any time: a duplicate
    doorbell is harmless because the lease admits one worker."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS)
    lost = list(Run.objects.filter(status=RunStatus.QUEUED, enqueued_at__lt=stale).values_list("pk", flat=True))
    expired = list(Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).values_list("pk", flat=True))
    undelivered = list(
        ApprovalRequest.objects.filter(
            run__status=RunStatus.WAITING,
            tool_call__status=ToolCallStatus.AWAITING,
            status__in=list(DECIDED),
            decided_at__lt=stale,
        )
        .values_list("run_id", flat=True)
        .distinct()
    )
    for run_id in lost + expired:
        with transaction.atomic():
            Run.objects.filter(pk=run_id).update(enqueued_at=now)
            enqueue_advance(run_id)
    for run_id in undelivered:
        with transaction.atomic():
            enqueue_advance(run_id, resume=True)
    return {"requeued": len(lost), "lease_expired": len(expired), "resumes_rung": len(undelivered)}
