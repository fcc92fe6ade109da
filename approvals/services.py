"""Writes to approval requests. ``approval_request_decide`` is the only writer of a decision."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import Agent, Run, RunStatus, ToolCall
from agents.tools import FINAL_ANSWER, ToolArgumentsInvalid, registry
from approvals.events import inbox_access_changed, inbox_event_publish
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus, Decision
from approvals.policy import CheckpointVerdict, RunContext, checkpoint_verdict
from approvals.selectors import user_may_review
from audit.services import audit_record, audited_atomic
from config.api import Conflict, DomainError, Forbidden


class AlreadyDecided(Conflict):
    code = "already_decided"


class DecisionInvalid(DomainError):
    code = "invalid_decision"


class NotAllowed(Forbidden):
    code = "not_allowed"


class ArgumentsChanged(Conflict):
    code = "arguments_changed"


VERDICTS = {
    ApprovalKind.APPROVAL: {"approve", "edit", "reject"},
    ApprovalKind.SUGGESTION: {"done", "dismiss"},
    ApprovalKind.REVIEW: {"ok", "flag"},
    ApprovalKind.QUESTION: {"respond", "reject"},
}
FINAL_STATUS = {
    "approve": ApprovalStatus.APPROVED,
    "edit": ApprovalStatus.APPROVED,
    "reject": ApprovalStatus.REJECTED,
    "respond": ApprovalStatus.ANSWERED,
    "done": ApprovalStatus.DONE,
    "dismiss": ApprovalStatus.DISMISSED,
    "ok": ApprovalStatus.REVIEWED_OK,
    "flag": ApprovalStatus.FLAGGED,
}
RUN_OUTCOME = {
    "approve": "approved",
    "edit": "approved",
    "reject": "rejected",
    "respond": "answered",
    "done": "done",
    "dismiss": "dismissed",
}


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


def approval_request_decide(
    *,
    approval: ApprovalRequest,
    reviewer: Any,
    verdict: str,
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
    allowed = VERDICTS[ApprovalKind(approval.kind)]
    if verdict not in allowed:
        raise DecisionInvalid(
            f"{verdict!r} is not a decision for a {approval.kind}; use one of {', '.join(sorted(allowed))}."
        )
    if verdict == "reject" and not comment:
        raise DecisionInvalid("A rejection needs a reason.", details={"errors": {"comment": ["required"]}})
    if verdict == "respond" and not comment:
        raise DecisionInvalid("An answer needs text.", details={"errors": {"comment": ["required"]}})
    starter_id = approval.run.started_by_id
    if starter_id is not None and starter_id == reviewer.pk:
        raise NotAllowed("You started this run: another reviewer must decide its actions (four-eyes).")
    edited, edit_verdict = _validated_edit(approval, arguments) if verdict == "edit" else (None, None)

    with audited_atomic():
        # The row lock serializes deciders; the status check below lets exactly one win.
        locked = (
            ApprovalRequest.objects.select_for_update(no_key=True, of=("self",))
            .select_related("agent", "run")
            .get(pk=approval.pk)
        )
        if locked.status != ApprovalStatus.PENDING:
            who = locked.decided_by.get_username() if locked.decided_by else "the system"
            raise AlreadyDecided(
                f"Already {locked.status} by {who}.", details={"status": locked.status, "decided_by": who}
            )
        if arguments_hash and verdict in ("approve", "edit") and arguments_hash != locked.pending_arguments_hash:
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
        now = timezone.now()
        if edited is not None and edit_verdict is not None:
            locked.decided_arguments = edited
            # The policy has seen the edit: a rule it now meets can ask for more approvals, never fewer.
            locked.required_approvals = max(locked.required_approvals, edit_verdict.required_approvals)
        approving = verdict in ("approve", "edit")
        if approving:
            # An edit changes what is approved: earlier approvals were of other arguments.
            locked.approvals_count = 1 if verdict == "edit" else locked.approvals_count + 1
        partial = approving and locked.approvals_count < locked.required_approvals
        if not partial:
            locked.status = FINAL_STATUS[verdict]
            locked.decided_by = reviewer
            locked.decided_at = now
            locked.resolution_comment = comment
        locked.save()
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
        if not partial and locked.kind != ApprovalKind.REVIEW:
            _resume(locked, verdict=verdict, reviewer=reviewer, comment=comment)
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
    if verdict.verdict == "block":
        raise DecisionInvalid(
            f"The edited arguments are refused: {verdict.reason}.", details={"errors": {"arguments": [verdict.reason]}}
        )
    return edited, verdict


def _resume(approval: ApprovalRequest, *, verdict: str, reviewer: Any, comment: str) -> None:
    from agents.services import run_apply_decision

    # A rejected final answer ends the run: there is nothing left to re-plan.
    stop = verdict == "reject" and (approval.agent.on_reject == Agent.OnReject.STOP or approval.tool == FINAL_ANSWER)
    run_apply_decision(
        tool_call=approval.tool_call,
        outcome=RUN_OUTCOME[verdict],
        reviewer=reviewer,
        arguments=approval.decided_arguments if verdict in ("approve", "edit") else None,
        comment=comment,
        stop_run=stop,
    )


def approval_requests_cancel_for_run(*, run: Run, reason: str) -> int:
    """Inside the caller's transaction: pending requests of a stopped run are cancelled."""
    cancelled = 0
    for approval in ApprovalRequest.objects.select_for_update(no_key=True).filter(
        run=run, status=ApprovalStatus.PENDING
    ):
        approval.status = ApprovalStatus.CANCELLED
        approval.resolution_comment = reason
        approval.decided_at = timezone.now()
        approval.save(update_fields=["status", "resolution_comment", "decided_at", "updated_at"])
        audit_record(actor=None, action="approvals.request.cancelled", target=approval, data={"reason": reason})
        inbox_event_publish(approval=approval, type="approval.updated")
        cancelled += 1
    return cancelled


def approvals_sweep(*, now: Any = None) -> dict[str, int]:
    """Escalate requests past their SLA; apply the agent's expiry action past the deadline."""
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
    return {"expired": expired, "escalated": escalated}


def approval_request_expire(*, approval_id: int, now: Any = None) -> int:
    from agents.services import run_apply_decision

    now = now or timezone.now()
    with audited_atomic():
        # Same lock and status check as a decision: a racing decision and expiry end in one state.
        approval = (
            ApprovalRequest.objects.select_for_update(no_key=True, of=("self",))
            .select_related("agent", "run")
            .get(pk=approval_id)
        )
        if approval.status != ApprovalStatus.PENDING or approval.deadline is None or approval.deadline >= now:
            return 0
        approval.status = ApprovalStatus.EXPIRED
        approval.decided_at = now
        approval.resolution_comment = "expired"
        approval.save(update_fields=["status", "decided_at", "resolution_comment", "updated_at"])
        action = approval.agent.expiry_action
        audit_record(
            actor=None,
            action="approvals.request.expired",
            target=approval,
            data={"reason": "expired", "default_action": action, "deadline": approval.deadline},
        )
        if approval.kind != ApprovalKind.REVIEW:
            run_apply_decision(
                tool_call=approval.tool_call,
                outcome="rejected",
                reviewer=None,
                comment="expired: no decision before the deadline",
                stop_run=action == Agent.ExpiryAction.CANCEL
                or approval.agent.on_reject == Agent.OnReject.STOP
                or approval.tool == FINAL_ANSWER,
                stop_status=RunStatus.CANCELLED if action == Agent.ExpiryAction.CANCEL else RunStatus.REJECTED,
            )
        inbox_event_publish(approval=approval, type="approval.updated")
        webhook_enqueue(approval=approval, event="approval.decided")
    return 1


def approval_request_escalate(*, approval_id: int, now: Any = None) -> int:
    now = now or timezone.now()
    with audited_atomic():
        approval = (
            ApprovalRequest.objects.select_for_update(no_key=True, of=("self",))
            .select_related("agent")
            .get(pk=approval_id)
        )
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
                transaction.on_commit(lambda: notify_escalation(approval_id=approval.pk, recipients=recipients))
    return 1


def notify_escalation(*, approval_id: int, recipients: list[str]) -> None:
    import logging

    from django.core.mail import EmailMessage

    approval = ApprovalRequest.objects.select_related("agent").get(pk=approval_id)
    message = EmailMessage(
        subject=f"[Countersign] {approval.agent.slug}: {approval.tool} waits for a decision",
        body=(
            f"Approval #{approval.pk} ({approval.tool}, {approval.risk_class}) of agent {approval.agent.name} "
            f"is past its SLA and waits for a decision.\nReason it needs a person: {approval.policy_reason}\n"
            f"Deadline: {approval.deadline:%Y-%m-%d %H:%M} UTC\nInbox: /inbox/{approval.pk}/"
        ),
        to=recipients,
    )
    try:
        message.send()
    except Exception:  # noqa: BLE001 - a mail outage must not break the sweeper
        logging.getLogger(__name__).warning("escalation notice for approval %s not sent", approval_id)


def webhook_enqueue(*, approval: ApprovalRequest, event: str) -> None:
    if not approval.agent.webhook_url:
        return
    from approvals.tasks import deliver_webhook
    from approvals.webhooks import webhook_delivery_create

    delivery = webhook_delivery_create(approval=approval, event=event)
    # After commit, and in its own task: a slow or failing receiver never blocks a decision.
    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk))


def reviewer_assignment_set(*, agent: Agent, reviewer: Any, granted: bool, by: Any, reason: str = "") -> bool:
    """Grant or revoke a reviewer's right to decide an agent's approvals. Returns whether it changed."""
    from guardian.shortcuts import assign_perm, remove_perm

    with audited_atomic():
        has = reviewer.has_perm("agents.review_agent", agent)
        if has == granted:
            return False
        if granted:
            assign_perm("review_agent", reviewer, agent)
        else:
            remove_perm("review_agent", reviewer, agent)
        audit_record(
            actor=by,
            action="approvals.reviewer.assigned" if granted else "approvals.reviewer.revoked",
            target=agent,
            data={"reviewer": reviewer.get_username(), "reason": reason},
        )
        inbox_access_changed(user_id=reviewer.pk)
    return True


def business_rule_save(*, rule: Any, by: Any, reason: str = "") -> Any:
    """Create or change a business rule (validated), audited with the old and new values."""
    from approvals.models import BusinessRule

    rule.full_clean()
    with audited_atomic():
        old = None
        if rule.pk:
            previous = BusinessRule.objects.select_for_update(no_key=True).get(pk=rule.pk)
            old = {
                "tool": previous.tool,
                "field": previous.field,
                "operator": previous.operator,
                "value": previous.value,
                "effect": previous.effect,
                "enabled": previous.enabled,
                "note": previous.note,
            }
        rule.save()
        new = {
            "tool": rule.tool,
            "field": rule.field,
            "operator": rule.operator,
            "value": rule.value,
            "effect": rule.effect,
            "enabled": rule.enabled,
            "note": rule.note,
        }
        audit_record(
            actor=by,
            action="approvals.rule.created" if old is None else "approvals.rule.changed",
            target=rule,
            data={"old": old, "new": new, "reason": reason},
        )
    return rule


def business_rule_delete(*, rule: Any, by: Any, reason: str = "") -> None:
    with audited_atomic():
        audit_record(
            actor=by,
            action="approvals.rule.deleted",
            target=rule,
            data={
                "old": {
                    "tool": rule.tool,
                    "field": rule.field,
                    "operator": rule.operator,
                    "value": rule.value,
                    "effect": rule.effect,
                },
                "reason": reason,
            },
        )
        rule.delete()
