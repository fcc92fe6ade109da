"""Inbox events: stored with a monotonic seq, then pushed over the channel layer after commit."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from approvals.models import ApprovalRequest, InboxEvent

logger = logging.getLogger(__name__)


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


def inbox_event_publish(*, approval: ApprovalRequest, type: str) -> InboxEvent:
    """Store the event (its id is the seq) inside the caller's transaction; push it after commit."""
    event = InboxEvent.objects.create(type=type, approval=approval, agent_id=approval.agent_id)
    # After commit: a client told about an approval must be able to read it at once.
    transaction.on_commit(lambda: _push(event.pk))
    return event


def _push(event_id: int) -> None:
    event = InboxEvent.objects.select_related("approval__agent", "approval__decided_by").get(pk=event_id)
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            agent_group(event.agent_id),
            {"type": "inbox.event", "agent_id": event.agent_id, "message": event_message(event)},
        )
    except Exception:
        # The websocket is only a notification: clients catch up from the stored seq.
        logger.warning("could not push inbox event %s", event_id, exc_info=True)


def inbox_access_changed(*, user_id: int) -> None:
    """Tell the user's open inbox sockets to read their permissions again, after commit."""

    def push() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(user_group(user_id), {"type": "inbox.access"})
        except Exception:
            # Open sockets still re-read permissions before forwarding (ACCESS_RECHECK_SECONDS).
            logger.warning("could not push an access change to user %s", user_id, exc_info=True)

    transaction.on_commit(push)
