"""Rows for the dashboard's tests: runs, steps, tool calls and approval requests at given times.

Written straight to the tables (bulk_create), as a long history would be: the dashboard reads
what is stored, whoever wrote it. ``explicit_times`` lets a test give ``created_at`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User

from agents.models import Agent, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.tools import arguments_hash
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus

STAMPED = (Run, Step, ToolCall, ApprovalRequest)


@contextmanager
def explicit_times() -> Iterator[None]:
    """``created_at`` as given rather than now (auto_now_add off for the seeded models)."""
    fields = [model._meta.get_field("created_at") for model in STAMPED]
    saved = [field.auto_now_add for field in fields]  # type: ignore[union-attr]
    for field in fields:
        field.auto_now_add = False  # type: ignore[union-attr]
    try:
        yield
    finally:
        for field, value in zip(fields, saved, strict=True):
            field.auto_now_add = value  # type: ignore[union-attr]


@dataclass(frozen=True)
class Decided:
    """How an approval request of a seeded run ended, and after how long."""

    status: str
    after: timedelta | None = None
    edited: bool = False
    by_person: bool = True
    escalated: bool = False


APPROVED = Decided(ApprovalStatus.APPROVED, timedelta(seconds=20))
EDITED = Decided(ApprovalStatus.APPROVED, timedelta(seconds=100), edited=True)
REJECTED = Decided(ApprovalStatus.REJECTED, timedelta(minutes=10))
EXPIRED = Decided(ApprovalStatus.EXPIRED, timedelta(hours=2), by_person=False, escalated=True)
PENDING = Decided(ApprovalStatus.PENDING)
PENDING_ESCALATED = Decided(ApprovalStatus.PENDING, escalated=True)


def seed_runs(
    agent: Agent,
    *,
    user: User | None,
    at: datetime,
    status: str,
    count: int = 1,
    cost: str = "0",
    latencies: Sequence[int] = (),
    decided: Sequence[Decided] = (),
    reviewer: User | None = None,
    error: str = "",
) -> list[Run]:
    """``count`` runs of ``agent`` created at ``at``, each with a step per latency (ms, created
    at ``at`` too) and an approval request per ``decided``, raised at ``at``."""
    finished = at + timedelta(minutes=1) if status not in (RunStatus.QUEUED, RunStatus.WAITING) else None
    with explicit_times():
        runs = Run.objects.bulk_create(
            Run(
                agent=agent,
                started_by=user,
                status=status,
                input={"n": n},
                cost=Decimal(cost),
                created_at=at,
                finished_at=finished,
                error=error,
                step_count=len(latencies),
            )
            for n in range(count)
        )
        Step.objects.bulk_create(
            Step(run=run, index=i, kind=Step.Kind.REASONING, latency_ms=ms, created_at=at)
            for run in runs
            for i, ms in enumerate(latencies)
        )
        for run in runs:
            _seed_approvals(run, agent=agent, at=at, decided=decided, reviewer=reviewer)
    return runs


def _seed_approvals(run: Run, *, agent: Agent, at: datetime, decided: Sequence[Decided], reviewer: User | None) -> None:
    arguments: dict[str, Any] = {"amount": 10}
    calls = ToolCall.objects.bulk_create(
        ToolCall(
            run=run,
            step=100 + i,
            tool="issue_refund",
            arguments=arguments,
            arguments_hash=arguments_hash(arguments),
            status=ToolCallStatus.AWAITING,
            created_at=at,
        )
        for i in range(len(decided))
    )
    ApprovalRequest.objects.bulk_create(
        ApprovalRequest(
            run=run,
            agent=agent,
            tool_call=call,
            kind=ApprovalKind.APPROVAL,
            tool="issue_refund",
            arguments=arguments,
            arguments_hash=arguments_hash(arguments),
            risk_class="financial",
            policy_reason="refunds wait for a person",
            status=how.status,
            created_at=at,
            decided_at=at + how.after if how.after else None,
            decided_by=reviewer if how.by_person and how.after else None,
            decided_arguments={"amount": 8} if how.edited else None,
            escalated_at=at + timedelta(minutes=15) if how.escalated else None,
        )
        for call, how in zip(calls, decided, strict=True)
    )
