"""What inbox events say: the approval payload (REST and websocket alike) and the channel-layer groups.

Stored and pushed by ``approvals.notify``."""

from __future__ import annotations

from typing import Any

from approvals.models import ApprovalRequest, InboxEvent


def agent_group(agent_id: int) -> str:
    return f"inbox.agent.{agent_id}"


def user_group(user_id: int) -> str:
    return f"inbox.user.{user_id}"


def approval_summary(approval: ApprovalRequest) -> str:
    args = approval.decided_arguments or approval.arguments
    parts = [f"{key}={value}" for key, value in list(args.items())[:4] if not isinstance(value, dict | list)]
    text = f"{approval.tool}(" + ", ".join(parts) + ")"
    return text if len(text) <= 160 else text[:157] + "..."


def approval_payload(approval: ApprovalRequest) -> dict[str, Any]:
    """The approval as the inbox shows it; also what the websocket sends."""
    agent = approval.agent
    return {
        "id": approval.pk,
        "run": approval.run_id,
        "agent": {"slug": agent.slug, "name": agent.name},
        "kind": approval.kind,
        "tool": approval.tool,
        "summary": approval_summary(approval),
        "arguments": approval.arguments,
        "decided_arguments": approval.decided_arguments,
        # Sent back with an approve, binds it to exactly these arguments (409 if they changed).
        "arguments_hash": approval.pending_arguments_hash,
        "rationale": approval.rationale,
        "risk_class": approval.risk_class,
        "policy_reason": approval.policy_reason,
        "status": approval.status,
        "required_approvals": approval.required_approvals,
        "approvals_count": approval.approvals_count,
        "created_at": approval.created_at.isoformat() if approval.created_at else None,
        "deadline": approval.deadline.isoformat() if approval.deadline else None,
        "escalated": approval.escalated_at is not None,
        "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
    }


def event_message(event: InboxEvent) -> dict[str, Any]:
    return {"type": event.type, "seq": event.pk, "approval": approval_payload(event.approval)}
