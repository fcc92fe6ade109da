from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from approvals.models import WebhookDelivery
from approvals.tasks import WebhookFailed, deliver_webhook
from approvals.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.approvals.test_decisions import waiting_refund

pytestmark = pytest.mark.django_db


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[dict, bytes]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_created_and_decided_webhooks_are_signed(
    support_agent, starter, assigned_reviewer, django_capture_on_commit_callbacks
):
    from approvals.decisions import approval_request_decide

    receiver = Receiver()
    support_agent.webhook_url = receiver.url
    support_agent.webhook_secret = "whsec-demo-1234"
    support_agent.save()
    try:
        approval = waiting_refund(support_agent, starter)
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
        for delivery in WebhookDelivery.objects.order_by("id"):
            deliver_webhook.apply(args=[delivery.pk], throw=True)
    finally:
        receiver.close()
    events = [json.loads(body)["event"] for _, body in receiver.received]
    assert events == ["approval.created", "approval.decided"]
    for headers, body in receiver.received:
        assert verify(
            secret="whsec-demo-1234",
            timestamp=headers[TIMESTAMP_HEADER],
            body=body,
            signature=headers[SIGNATURE_HEADER],
        )
        assert not verify(
            secret="wrong", timestamp=headers[TIMESTAMP_HEADER], body=body, signature=headers[SIGNATURE_HEADER]
        )
        payload = json.loads(body)
        assert payload["text"].startswith("[support] issue_refund")
    assert WebhookDelivery.objects.filter(delivered_at__isnull=False).count() == 2


def test_failing_receiver_never_blocks_a_decision(support_agent, starter, assigned_reviewer):
    from approvals.decisions import approval_request_decide

    receiver = Receiver(status=500)
    support_agent.webhook_url = receiver.url
    support_agent.webhook_secret = "s"
    support_agent.save()
    try:
        approval = waiting_refund(support_agent, starter)
        decided = approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
        assert decided.status == "approved"
        delivery = WebhookDelivery.objects.get(event="approval.created")
        with pytest.raises(WebhookFailed):
            deliver_webhook.apply(args=[delivery.pk], throw=True, retries=6)
    finally:
        receiver.close()
    delivery.refresh_from_db()
    assert delivery.status_code == 500 and delivery.delivered_at is None and delivery.attempts >= 1


def test_a_webhook_the_broker_refused_is_rung_at_the_next_sweep(
    support_agent, starter, assigned_reviewer, monkeypatch, django_capture_on_commit_callbacks
):
    from approvals.decisions import approval_request_decide, approvals_sweep
    from config import doorbell
    from tests.outage import broker_refusing

    support_agent.webhook_url = "http://127.0.0.1:9/hook"
    support_agent.webhook_secret = "s"
    support_agent.save()
    with broker_refusing(), django_capture_on_commit_callbacks(execute=True):
        approval = waiting_refund(support_agent, starter)
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    lost = WebhookDelivery.objects.order_by("pk")
    assert [(d.event, d.enqueue_lost, d.attempts) for d in lost] == [
        ("approval.created", True, 0),
        ("approval.decided", True, 0),
    ]

    rung: list[int] = []
    monkeypatch.setattr(
        doorbell.app, "send_task", lambda name, args: rung.append(args[0]) if name == doorbell.DELIVER_WEBHOOK else None
    )
    assert approvals_sweep()["webhooks_rung"] == 2
    assert rung == [d.pk for d in lost]
    assert not WebhookDelivery.objects.filter(enqueue_lost=True).exists()
    # rung once: the next sweep finds nothing (the deliveries are young and no longer marked)
    assert approvals_sweep()["webhooks_rung"] == 0 and len(rung) == 2
