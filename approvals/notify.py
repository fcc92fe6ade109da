"""Telling people: inbox events over the channel layer, signed webhooks, escalation mail.

Everything here is registered inside the writer's transaction and sent after commit: a client
told about an approval can read it at once, and a slow receiver never holds a decision up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.db.models import Q

from agents.models import Agent
from approvals.events import agent_group, event_message, user_group
from approvals.models import Alert, ApprovalRequest, InboxEvent, WebhookDelivery
from approvals.webhooks import alert_webhook_delivery_create, webhook_delivery_create
from audit.types import JSONObject
from config.doorbell import DELIVER_WEBHOOK, ring, send

logger = logging.getLogger(__name__)


# Names the advisory lock that makes inbox events commit in seq order on PostgreSQL.
INBOX_LOCK_KEY = 0x496E6278  # "Inbx"


def _lock_inbox() -> None:
    """Held until the caller's transaction ends, so events commit in the order of their seqs: a
    socket handed seq N has had every earlier event committed before it (approvals/consumers.py
    relies on it). It orders inbox events alone: audit appends take no lock (audit/sealer.py
    orders them after commit). SQLite writers are serialized for their whole transaction
    (IMMEDIATE): nothing to take."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INBOX_LOCK_KEY])


def inbox_event_publish(*, approval: ApprovalRequest, type: str) -> InboxEvent:
    """Store the event (its id is the seq) inside the caller's transaction; push it after commit."""
    _lock_inbox()
    prev_seq = InboxEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    event = InboxEvent.objects.create(type=type, approval=approval, agent_id=approval.agent_id, prev_seq=prev_seq)
    # After commit: a client told about an approval must be able to read it at once.
    transaction.on_commit(lambda: _push(event.pk))
    return event


def _group_send(group: str, message: dict[str, Any]) -> None:
    """Send on the channel layer, giving up after BROKER_TIMEOUT_SECONDS: the layer lives on the
    broker's Redis, and a Redis that hangs must not hold up the request that pushes."""
    layer = get_channel_layer()
    if layer is None:
        return

    async def send() -> None:
        await asyncio.wait_for(layer.group_send(group, message), timeout=settings.BROKER_TIMEOUT_SECONDS)

    async_to_sync(send)()


# A push names this many of the events stored before it, with their agents: a socket whose
# last sent seq is among them or after the oldest knows without a query whether it missed one.
RECENT_EVENTS = 32


def _push(event_id: int) -> None:
    event = InboxEvent.objects.select_related("approval__agent", "approval__decided_by").get(pk=event_id)
    # Final: events commit in seq order (_lock_inbox), so every event before this committed one
    # has committed or rolled back; none below its seq can appear later.
    recent = list(
        InboxEvent.objects.filter(pk__lt=event_id).order_by("-pk").values_list("pk", "agent_id")[:RECENT_EVENTS]
    )
    message = event_message(event)
    try:
        _group_send(
            agent_group(event.agent_id),
            {
                "type": "inbox.event",
                "agent_id": event.agent_id,
                "seq": event.pk,
                "prev_seq": event.prev_seq,
                # Every event with a seq above this one and below the event's is in recent.
                "listed_after": recent[-1][0] - 1 if len(recent) == RECENT_EVENTS else 0,
                "recent": recent,
                # Encoded once here rather than once by each of the sockets it reaches.
                "text": json.dumps(message),
            },
        )
    except Exception:
        # The websocket is only a notification: clients catch up from the stored seq.
        logger.warning("could not push inbox event %s", event_id, exc_info=True)


def inbox_access_changed(*, user_id: int) -> None:
    """Tell the user's open inbox sockets to read their permissions again, after commit."""

    def push() -> None:
        try:
            _group_send(user_group(user_id), {"type": "inbox.access"})
        except Exception:
            # Open sockets still re-read permissions before forwarding (ACCESS_RECHECK_SECONDS).
            logger.warning("could not push an access change to user %s", user_id, exc_info=True)

    transaction.on_commit(push)


def webhook_enqueue(*, approval: ApprovalRequest, event: str) -> None:
    if not approval.agent.webhook_url:
        return
    delivery = webhook_delivery_create(approval=approval, event=event)
    # In its own task: a slow or failing receiver never blocks a decision.
    ring(DELIVER_WEBHOOK, delivery.pk, on_failure=lambda: _mark_enqueue_lost(delivery.pk))


def agent_webhook_enqueue(*, agent: Agent, event: str, payload: JSONObject) -> None:
    """Inside the caller's transaction: a signed delivery of ``payload`` to the agent's webhook
    (e.g. ``version.rolled_back`` from agents.rollout); its task after commit."""
    if not agent.webhook_url:
        return
    delivery = WebhookDelivery.objects.create(agent=agent, event=event, payload={"event": event, **payload})
    ring(DELIVER_WEBHOOK, delivery.pk, on_failure=lambda: _mark_enqueue_lost(delivery.pk))


def alert_webhook_enqueue(*, alert: Alert, event: str) -> None:
    """Inside the alert's transaction: the delivery row commits with the alert, its task after."""
    if not alert.rule.webhook_url:
        return
    delivery = alert_webhook_delivery_create(alert=alert, event=event)
    ring(DELIVER_WEBHOOK, delivery.pk, on_failure=lambda: _mark_enqueue_lost(delivery.pk))


def _mark_enqueue_lost(delivery_id: int) -> None:
    WebhookDelivery.objects.filter(pk=delivery_id).update(enqueue_lost=True)


def webhooks_ring_lost(*, now: datetime) -> int:
    """Ring again for deliveries whose task never reached a worker: the broker refused it (marked),
    or it was lost after commit (never attempted after RUN_REQUEUE_AFTER_SECONDS). A copy rung
    twice posts nothing once another has delivered (the task skips a delivered one)."""
    stale = now - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS)
    lost = list(
        WebhookDelivery.objects.filter(
            Q(enqueue_lost=True) | Q(created_at__lt=stale), delivered_at__isnull=True, attempts=0
        )
        .order_by("pk")  # oldest first, as they were meant to go
        .values_list("pk", flat=True)[:500]
    )
    for delivery_id in lost:
        WebhookDelivery.objects.filter(pk=delivery_id).update(enqueue_lost=False)
        send(DELIVER_WEBHOOK, delivery_id, on_failure=partial(_mark_enqueue_lost, delivery_id))
    return len(lost)


def escalation_mail(*, approval_id: int, recipients: list[str]) -> None:
    """After commit: tell the escalation group a request is past its SLA."""

    def send() -> None:
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
            logger.warning("escalation notice for approval %s not sent", approval_id)

    transaction.on_commit(send)
