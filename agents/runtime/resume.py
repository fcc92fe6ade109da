"""A person's decision reaches its run through the database: the decisions service writes the
approval's status and rings the resume task by name; the worker that takes the run's lease
applies the decision here, so only the runtime moves the run and its calls."""

from __future__ import annotations

from typing import Any

from agents import tracing
from agents.models import Agent, Run, RunStatus, Step, ToolCallStatus
from agents.runtime.lease import Lease, hold
from agents.runtime.lifecycle import display_name, run_finish
from agents.runtime.status import DECIDED, tool_call_move
from agents.runtime.steps import record_step
from agents.tools import FINAL_ANSWER, arguments_hash
from approvals.models import ApprovalRequest, ApprovalStatus
from audit.services import audited_atomic

EXPIRED_COMMENT = "expired: no decision before the deadline"


def decisions_apply(run: Run, *, lease: Lease) -> bool:
    """Under the lease: apply every decided approval of a call that waits. Returns whether the
    run goes on (False: a decision ended it)."""
    with audited_atomic():
        locked = hold(run, lease)
        decided = (
            ApprovalRequest.objects.filter(run=locked, tool_call__status=ToolCallStatus.AWAITING)
            .filter(status__in=list(DECIDED))
            .select_related("tool_call", "decided_by")
            .order_by("tool_call__step")
        )
        for approval in decided:
            if not _apply(locked, approval):
                return False
    return True


def _apply(run: Run, approval: ApprovalRequest) -> bool:
    tool_call = approval.tool_call
    call_status, outcome = DECIDED[approval.status]
    reviewer = approval.decided_by
    expired = approval.status == ApprovalStatus.EXPIRED
    comment = EXPIRED_COMMENT if expired else approval.resolution_comment
    fields: dict[str, Any] = {}
    observation: dict[str, Any] | None = None
    edited = None
    if call_status == ToolCallStatus.APPROVED:
        edited = approval.decided_arguments
        final = edited if edited is not None else tool_call.arguments
        digest = arguments_hash(final)
        fields = {"arguments": final, "arguments_hash": digest, "approved_hash": digest}
    elif call_status == ToolCallStatus.SUCCEEDED:
        fields = {"output": {"answer": comment}}
        observation = {"answer": comment}
    elif call_status == ToolCallStatus.SUGGESTED:
        fields = {"output": {"outcome": outcome, "comment": comment}}
        observation = {"outcome": outcome, "by": display_name(reviewer)}
    else:
        fields = {"error": comment}
    if not tool_call_move(tool_call_id=tool_call.pk, to=call_status, source=ToolCallStatus.AWAITING, **fields):
        return True  # applied by an earlier worker
    tracing.decision_spans(run, approval, call_status=call_status)
    rejected = call_status == ToolCallStatus.REJECTED
    record_step(
        run,
        Step.Kind.DECISION,
        output=observation,
        error=f"Rejected by {display_name(reviewer)}: {comment}" if rejected else "",
        input={
            "call_step": tool_call.step,
            "tool": tool_call.tool,
            "status": outcome,
            "reviewer": display_name(reviewer),
            "comment": comment,
            "arguments": edited if call_status == ToolCallStatus.APPROVED else None,
        },
    )
    if not rejected:
        return True
    agent = run.agent
    if expired and agent.expiry_action == Agent.ExpiryAction.CANCEL:
        run_finish(run, RunStatus.CANCELLED, error=f"Cancelled: {comment}", actor=reviewer)
    # A rejected final answer ends the run: there is nothing left to re-plan.
    elif agent.on_reject == Agent.OnReject.STOP or tool_call.tool == FINAL_ANSWER:
        run_finish(run, RunStatus.REJECTED, error=f"Rejected by {display_name(reviewer)}: {comment}", actor=reviewer)
    else:
        return True
    return False
