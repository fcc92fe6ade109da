"""The sweeper's half for runs: ring again what a lost doorbell or a dead worker left behind."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Run, RunStatus, ToolCallStatus
from agents.runtime.lifecycle import enqueue_advance
from agents.runtime.status import DECIDED
from approvals.models import ApprovalRequest


def runs_recover(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue runs whose lease expired or whose enqueue was lost, and runs whose approval is
    decided but which still wait (the resume was lost). Safe to run any time: a duplicate
    doorbell is harmless because the lease admits one worker.

    A doorbell the broker refused left its mark (a queued run's ``enqueued_at`` NULL, a decided
    approval's ``resume_lost``): those are rung at once. Otherwise a doorbell counts as lost only
    after RUN_REQUEUE_AFTER_SECONDS (a crash between commit and publish, a broker that lost its
    queue), since a worker may be on its way."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS)
    lost = list(
        Run.objects.filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale), status=RunStatus.QUEUED)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    expired = list(Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).values_list("pk", flat=True))
    undelivered = list(
        ApprovalRequest.objects.filter(
            Q(decided_at__lt=stale) | Q(resume_lost=True),
            run__status=RunStatus.WAITING,
            tool_call__status=ToolCallStatus.AWAITING,
            status__in=list(DECIDED),
        )
        .order_by("run_id")
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
