"""The one writer of ApprovalRequest.status: create, decide, cancel, expire, escalate, sweep.

Lock, check, act, audit, then notify: each write takes the request's row, moves its status
with a conditional UPDATE from the statuses ``APPROVAL_MOVES`` allows, writes its audit row in
the same transaction, and pushes after commit. A decision reaches its run through the database:
the resume task is rung by name, and the run's worker applies the decision under its lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from agents.models import Run, ToolCall
from agents.tools import FINAL_ANSWER, ToolArgumentsInvalid, registry
from approvals.models import (
    APPROVAL_MOVES,
    KIND_VERDICTS,
    VERDICT_STATUS,
    ApprovalKind,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    DecisionVerdict,
    Verdict,
)
from approvals.notify import escalation_mail, inbox_event_publish, webhook_enqueue, webhooks_ring_lost
from approvals.policy import CheckpointVerdict, RunContext, checkpoint_verdict
from approvals.selectors import review_granted_by_another, user_may_review
from audit.services import audit_record, audited_atomic
from config.doorbell import RESUME_RUN, ring
from config.errors import Conflict, DomainError, Forbidden


class AlreadyDecided(Conflict):
    code = "already_decided"


class DecisionInvalid(DomainError):
    code = "invalid_decision"


class NotAllowed(Forbidden):
    code = "not_allowed"


class SelfGranted(NotAllowed):
    """The reviewer holds the right only by their own grant, or by one nobody is known to have made."""

    code = "self_granted"


class ArgumentsChanged(Conflict):
    code = "arguments_changed"


def approval_move(*, approval_id: int, to: ApprovalStatus, **fields: Any) -> bool:
    """Move the request to ``to`` from any status allowed to reach it. Returns whether it moved."""
    sources = [source for source, targets in APPROVAL_MOVES.items() if to in targets]
    return ApprovalRequest.objects.filter(pk=approval_id, status__in=sources).update(status=to, **fields) == 1


def approval_request_create(
    *, run: Run, tool_call: ToolCall, verdict: CheckpointVerdict, risk_class: str
) -> ApprovalRequest:
    """Inside the run's transaction: the request, its audit row and (after commit) its push."""
    agent = run.agent
    now = timezone.now()
    waits = verdict.kind != ApprovalKind.REVIEW
    approval = ApprovalRequest.objects.create(
        run=run,
        agent=agent,
        tool_call=tool_call,
        kind=verdict.kind,
        tool=tool_call.tool,
        arguments=tool_call.arguments,
        arguments_hash=tool_call.arguments_hash,
        rationale=tool_call.rationale,
        risk_class=risk_class,
        policy_reason=verdict.reason,
        required_approvals=verdict.required_approvals,
        deadline=now + timedelta(seconds=agent.approval_deadline_seconds) if waits else None,
        escalate_at=now + timedelta(seconds=agent.approval_sla_seconds) if waits else None,
    )
    audit_record(
        actor=agent,
        action="approvals.request.created",
        target=approval,
        data={
            "tool": approval.tool,
            "kind": approval.kind,
            "arguments": approval.arguments,
            "policy_reason": approval.policy_reason,
            "required_approvals": approval.required_approvals,
        },
    )
    inbox_event_publish(approval=approval, type="approval.created")
    webhook_enqueue(approval=approval, event="approval.created")
    return approval


def _locked(approval_id: int) -> ApprovalRequest:
    # The row lock serializes deciders, the sweeper and cancels; the status move lets one win.
    return (
        ApprovalRequest.objects.select_for_update(no_key=True, of=("self",))
        .select_related("agent", "run", "decided_by")
        .get(pk=approval_id)
    )


def _resume(approval: ApprovalRequest) -> None:
    # Only a request a run waits on wakes it; an after-the-fact review changes nothing there.
    if approval.kind != ApprovalKind.REVIEW:
        approval_id = approval.pk
        ring(RESUME_RUN, approval.run_id, on_failure=lambda: _resume_lost(approval_id))


def _resume_lost(approval_id: int) -> None:
    # After commit: the broker refused the resume. The mark makes the sweeper ring it at its
    # next period (agents.runtime.recovery) rather than after RUN_REQUEUE_AFTER_SECONDS.
    ApprovalRequest.objects.filter(pk=approval_id).update(resume_lost=True)


def approval_request_decide(
    *,
    approval: ApprovalRequest,
    reviewer: User,
    verdict: DecisionVerdict | str,
    arguments: dict[str, Any] | None = None,
    comment: str = "",
    arguments_hash: str | None = None,
) -> ApprovalRequest:
    """The only writer of decisions. ``arguments_hash``, when given, binds an approval to the
    exact arguments the reviewer saw: if another reviewer edited them meanwhile, nothing is
    decided and ArgumentsChanged (409) says so."""
    comment = (comment or "").strip()
    if not user_may_review(user=reviewer, agent=approval.agent):
        raise NotAllowed("You may not review this agent's approvals.")
    if not review_granted_by_another(user=reviewer, agent=approval.agent):
        raise SelfGranted(
            "Your right to review this agent was not granted by someone else (separation of duties): "
            "ask another operator to grant it."
        )
    allowed = KIND_VERDICTS[ApprovalKind(approval.kind)]
    if verdict not in allowed:
        raise DecisionInvalid(
            f"{verdict!r} is not a decision for a {approval.kind}; use one of {', '.join(sorted(allowed))}."
        )
    verdict = DecisionVerdict(verdict)
    if verdict == DecisionVerdict.REJECT and not comment:
        raise DecisionInvalid("A rejection needs a reason.", details={"errors": {"comment": ["required"]}})
    if verdict == DecisionVerdict.RESPOND and not comment:
        raise DecisionInvalid("An answer needs text.", details={"errors": {"comment": ["required"]}})
    starter_id = approval.run.started_by_id
    if starter_id is not None and starter_id == reviewer.pk:
        raise NotAllowed("You started this run: another reviewer must decide its actions (four-eyes).")
    edited, edit_verdict = _validated_edit(approval, arguments) if verdict == DecisionVerdict.EDIT else (None, None)
    approving = verdict in (DecisionVerdict.APPROVE, DecisionVerdict.EDIT)

    with audited_atomic():
        locked = _locked(approval.pk)
        if locked.status != ApprovalStatus.PENDING:
            who = locked.decided_by.get_username() if locked.decided_by else "the system"
            raise AlreadyDecided(
                f"Already {locked.status} by {who}.", details={"status": locked.status, "decided_by": who}
            )
        if arguments_hash and approving and arguments_hash != locked.pending_arguments_hash:
            raise ArgumentsChanged(
                "The arguments changed since you loaded them (another reviewer edited them): review them again.",
                details={"arguments": locked.pending_arguments, "arguments_hash": locked.pending_arguments_hash},
            )
        if Decision.objects.filter(request=locked, reviewer=reviewer).exists():
            raise AlreadyDecided(
                "You have already decided this request; a second reviewer must approve it.",
                details={"status": locked.status},
            )
        Decision.objects.create(request=locked, reviewer=reviewer, verdict=verdict, arguments=edited, comment=comment)
        fields: dict[str, Any] = {"updated_at": timezone.now()}
        if edited is not None and edit_verdict is not None:
            fields["decided_arguments"] = edited
            # The policy has seen the edit: a rule it now meets can ask for more approvals, never fewer.
            fields["required_approvals"] = max(locked.required_approvals, edit_verdict.required_approvals)
        if approving:
            # An edit changes what is approved: earlier approvals were of other arguments.
            fields["approvals_count"] = 1 if verdict == DecisionVerdict.EDIT else locked.approvals_count + 1
        required = fields.get("required_approvals", locked.required_approvals)
        partial = approving and fields["approvals_count"] < required
        if partial:
            ApprovalRequest.objects.filter(pk=locked.pk).update(**fields)
        else:
            fields.update(decided_by=reviewer, decided_at=fields["updated_at"], resolution_comment=comment)
            approval_move(approval_id=locked.pk, to=VERDICT_STATUS[verdict], **fields)
        locked.refresh_from_db()
        audit_record(
            actor=reviewer,
            action="approvals.request.decided",
            target=locked,
            data={
                "verdict": verdict,
                "arguments": edited,
                "comment": comment,
                "proposed_arguments": locked.arguments,
                "status": locked.status,
                "approvals": f"{locked.approvals_count}/{locked.required_approvals}",
            },
        )
        if not partial:
            _resume(locked)
        inbox_event_publish(approval=locked, type="approval.updated")
        if not partial:
            webhook_enqueue(approval=locked, event="approval.decided")
    return locked


def _validated_edit(approval: ApprovalRequest, arguments: Any) -> tuple[dict[str, Any], CheckpointVerdict]:
    """Edited arguments must pass the tool's schema and the policy again (no raising past a block)."""
    if approval.tool == FINAL_ANSWER:
        raise DecisionInvalid("A flagged final answer is approved or rejected, not edited.")
    tool = registry[approval.tool]
    try:
        edited = tool.validate_arguments(arguments)
    except ToolArgumentsInvalid as exc:
        raise DecisionInvalid("The edited arguments are invalid.", details={"errors": exc.errors}) from None
    verdict = checkpoint_verdict(
        agent=approval.agent,
        tool=tool,
        arguments=edited,
        context=RunContext(starter=approval.run.started_by, run_id=approval.run_id),
    )
    if verdict.verdict == Verdict.BLOCK:
        raise DecisionInvalid(
            f"The edited arguments are refused: {verdict.reason}.", details={"errors": {"arguments": [verdict.reason]}}
        )
    return edited, verdict


def approval_requests_cancel_for_run(*, run: Run, reason: str, keep_reviews: bool = False) -> int:
    """Inside the caller's transaction: pending requests of a stopped run are cancelled (with
    ``keep_reviews``, only those the run waited on: after-the-fact reviews stay open)."""
    cancelled = 0
    pending = ApprovalRequest.objects.select_for_update(no_key=True).filter(run=run, status=ApprovalStatus.PENDING)
    if keep_reviews:
        pending = pending.exclude(kind=ApprovalKind.REVIEW)
    for approval in pending:
        now = timezone.now()
        if not approval_move(
            approval_id=approval.pk,
            to=ApprovalStatus.CANCELLED,
            resolution_comment=reason,
            decided_at=now,
            updated_at=now,
        ):
            continue
        approval.refresh_from_db()
        audit_record(actor=None, action="approvals.request.cancelled", target=approval, data={"reason": reason})
        inbox_event_publish(approval=approval, type="approval.updated")
        cancelled += 1
    return cancelled


def approvals_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Escalate requests past their SLA; apply the agent's expiry action past the deadline; ring again
    for webhooks whose task never reached a worker."""
    now = now or timezone.now()
    expired = 0
    for approval_id in ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, deadline__lt=now).values_list(
        "pk", flat=True
    ):
        expired += approval_request_expire(approval_id=approval_id, now=now)
    escalated = 0
    for approval_id in ApprovalRequest.objects.filter(
        status=ApprovalStatus.PENDING, escalate_at__lt=now, escalated_at__isnull=True
    ).values_list("pk", flat=True):
        escalated += approval_request_escalate(approval_id=approval_id, now=now)
    return {"expired": expired, "escalated": escalated, "webhooks_rung": webhooks_ring_lost(now=now)}


def approval_request_expire(*, approval_id: int, now: datetime | None = None) -> int:
    """Past its deadline the request expires; its run applies the agent's expiry action."""
    now = now or timezone.now()
    with audited_atomic():
        # Same lock and status move as a decision: a racing decision and expiry end in one state.
        approval = _locked(approval_id)
        if approval.status != ApprovalStatus.PENDING or approval.deadline is None or approval.deadline >= now:
            return 0
        if not approval_move(
            approval_id=approval.pk,
            to=ApprovalStatus.EXPIRED,
            decided_at=now,
            resolution_comment="expired",
            updated_at=now,
        ):
            return 0
        approval.refresh_from_db()
        audit_record(
            actor=None,
            action="approvals.request.expired",
            target=approval,
            data={"reason": "expired", "default_action": approval.agent.expiry_action, "deadline": approval.deadline},
        )
        _resume(approval)
        inbox_event_publish(approval=approval, type="approval.updated")
        webhook_enqueue(approval=approval, event="approval.decided")
    return 1


def approval_request_escalate(*, approval_id: int, now: datetime | None = None) -> int:
    now = now or timezone.now()
    with audited_atomic():
        approval = _locked(approval_id)
        if approval.status != ApprovalStatus.PENDING or approval.escalated_at is not None:
            return 0
        approval.escalated_at = now
        approval.save(update_fields=["escalated_at", "updated_at"])
        group = approval.agent.escalation_group
        audit_record(
            actor=None,
            action="approvals.request.escalated",
            target=approval,
            data={"group": group.name if group else None, "sla_seconds": approval.agent.approval_sla_seconds},
        )
        inbox_event_publish(approval=approval, type="approval.updated")
        webhook_enqueue(approval=approval, event="approval.escalated")
        if group is not None:
            recipients = list(group.user_set.filter(is_active=True).exclude(email="").values_list("email", flat=True))
            if recipients:
                escalation_mail(approval_id=approval.pk, recipients=recipients)
    return 1
