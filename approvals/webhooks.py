"""Signed webhooks: per agent ``approval.created``, ``approval.escalated``, ``approval.decided``;
per alert rule ``alert.fired``, ``alert.resolved``.

The body is JSON with a Slack-compatible ``text`` field. The header
``X-Countersign-Signature: sha256=<hex>`` is HMAC-SHA256 of ``<timestamp>.<body>`` with the
agent's (or the alert rule's) webhook secret; ``X-Countersign-Timestamp`` carries the timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from approvals.events import approval_payload
from approvals.models import Alert, ApprovalRequest, WebhookDelivery
from audit.types import JSONObject

SIGNATURE_HEADER = "X-Countersign-Signature"
TIMESTAMP_HEADER = "X-Countersign-Timestamp"


def sign(*, secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(*, secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret=secret, timestamp=timestamp, body=body), signature)


def webhook_text(approval: ApprovalRequest, event: str) -> str:
    verb = {
        "approval.created": "needs a decision",
        "approval.escalated": "is past its SLA",
        "approval.decided": f"was {approval.status}",
    }[event]
    return f"[{approval.agent.slug}] {approval.tool} (approval #{approval.pk}, {approval.risk_class}) {verb}."


def webhook_delivery_create(*, approval: ApprovalRequest, event: str) -> WebhookDelivery:
    payload: JSONObject = {
        "event": event,
        "text": webhook_text(approval, event),
        "approval": approval_payload(approval),
    }
    return WebhookDelivery.objects.create(agent=approval.agent, event=event, payload=payload)


def alert_payload(alert: Alert) -> JSONObject:
    rule = alert.rule
    return {
        "id": alert.pk,
        "status": alert.status,
        "value": str(alert.value),
        "evidence": alert.evidence,
        "fired_at": alert.fired_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "rule": {
            "id": rule.pk,
            "name": rule.name,
            "metric": rule.metric,
            "agent": rule.agent.slug if rule.agent else None,
            "window_seconds": rule.window_seconds,
            "comparison": rule.comparison,
            "threshold": str(rule.threshold),
        },
    }


def alert_text(alert: Alert, event: str) -> str:
    rule = alert.rule
    where = rule.agent.slug if rule.agent else "all agents"
    state = "fired" if event == "alert.fired" else "resolved"
    return (
        f"[{where}] alert {rule.name!r} {state}: {rule.metric} is {alert.value} "
        f"({rule.comparison} {rule.threshold} over {rule.window_seconds} s)."
    )


def alert_webhook_delivery_create(*, alert: Alert, event: str) -> WebhookDelivery:
    payload: JSONObject = {"event": event, "text": alert_text(alert, event), "alert": alert_payload(alert)}
    return WebhookDelivery.objects.create(agent=alert.rule.agent, alert=alert, event=event, payload=payload)


def signed_request(delivery: WebhookDelivery) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret=delivery.secret, timestamp=timestamp, body=body),
    }
    return body, headers
