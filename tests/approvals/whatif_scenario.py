"""Four support runs driven by the real runtime and decided through the decision service, for
the what-if tests: a refund rejected, one edited, one held by the >500 rule and approved, one
blocked by the >5000 rule; every other call approved."""

from __future__ import annotations

from dataclasses import dataclass

from agents import runtime
from agents.models import Run, Ticket, ToolCall
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus


@dataclass
class Scenario:
    rejected: ToolCall  # issue_refund of 120, rejected
    edited: ToolCall  # issue_refund of 200, edited to 150
    held: ToolCall  # issue_refund of 700, held by the >500 rule, approved
    blocked: ToolCall  # issue_refund of 6000, blocked


def _driven(agent, starter, reviewer, *, amount: int, refund: str) -> Run:
    run = runtime.run_create(
        agent=agent,
        user=starter,
        payload={
            "ticket_id": Ticket.objects.first().pk,
            "customer_email": "jane@example.com",
            "amount": amount,
            "currency": "USD",
            "reason": "broken kettle",
        },
    )
    runtime.run_advance(run_id=run.pk)
    for _ in range(10):
        pending = list(ApprovalRequest.objects.filter(run=run, status=ApprovalStatus.PENDING).order_by("id"))
        if not pending:
            break
        for approval in pending:
            if approval.tool == "issue_refund" and refund == "reject":
                approval_request_decide(approval=approval, reviewer=reviewer, verdict="reject", comment="Not owed.")
            elif approval.tool == "issue_refund" and refund == "edit":
                edited = {**approval.arguments, "amount": 150}
                approval_request_decide(
                    approval=approval, reviewer=reviewer, verdict="edit", arguments=edited, comment="Only 150."
                )
            else:
                approval_request_decide(approval=approval, reviewer=reviewer, verdict="approve")
        runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.is_terminal, run.status
    return run


def scenario_make(agent, starter, reviewer) -> Scenario:
    runs = [
        _driven(agent, starter, reviewer, amount=120, refund="reject"),
        _driven(agent, starter, reviewer, amount=200, refund="edit"),
        _driven(agent, starter, reviewer, amount=700, refund="approve"),
        _driven(agent, starter, reviewer, amount=6000, refund="approve"),
    ]
    refunds = [ToolCall.objects.get(run=run, tool="issue_refund") for run in runs]
    return Scenario(*refunds)
