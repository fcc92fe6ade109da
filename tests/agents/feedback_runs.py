"""Runs of the demo support agent driven to their end by the real runtime, for the feedback tests."""

from __future__ import annotations

from typing import Any

from agents import runtime
from agents.models import Run, Ticket
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus

# What the run's input holds and the model must never see: the customer's address.
CUSTOMER_EMAIL = "jane.doe@example.com"


def run_started(agent, starter, *, amount: int = 120) -> Run:
    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=agent,
        user=starter,
        payload={
            "ticket_id": ticket.pk,
            "customer_email": CUSTOMER_EMAIL,
            "amount": amount,
            "currency": "USD",
            "reason": "broken kettle",
        },
    )
    runtime.run_advance(run_id=run.pk)
    return Run.objects.select_related("agent", "started_by").get(pk=run.pk)


def run_finished(agent, starter, reviewer, *, edits: dict[str, dict[str, Any]] | None = None) -> Run:
    """A run whose every waiting call the reviewer approved, or edited with ``edits[tool]``
    (merged into the proposed arguments), until it ended."""
    run = run_started(agent, starter)
    for _ in range(10):
        pending = ApprovalRequest.objects.filter(run=run, status=ApprovalStatus.PENDING).order_by("id")
        if not pending:
            break
        for approval in pending:
            edit = (edits or {}).get(approval.tool)
            if edit is None:
                approval_request_decide(approval=approval, reviewer=reviewer, verdict="approve")
            else:
                approval_request_decide(
                    approval=approval, reviewer=reviewer, verdict="edit", arguments={**approval.arguments, **edit}
                )
        runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.is_terminal, run.status
    return Run.objects.select_related("agent", "started_by").get(pk=run.pk)
