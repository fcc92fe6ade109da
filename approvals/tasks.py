from __future__ import annotations

import logging

import httpx
from celery import Task, shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from approvals.alerts import alerts_evaluate
from approvals.models import WebhookDelivery
from approvals.webhooks import signed_request

logger = logging.getLogger(__name__)


class WebhookFailed(Exception):
    pass


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no types
    name="approvals.tasks.deliver_webhook",
    bind=True,
    autoretry_for=(WebhookFailed,),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
)
def deliver_webhook(self: Task, delivery_id: int) -> None:
    delivery = WebhookDelivery.objects.select_related("agent", "alert__rule").filter(pk=delivery_id).first()
    if delivery is None or delivery.delivered_at is not None:
        return  # unknown, or delivered by an earlier copy of this task
    if not delivery.url:
        # The webhook was removed since: attempted, so that the sweeper does not ring it again.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=F("attempts") + 1, error="no webhook URL")
        return
    body, headers = signed_request(delivery)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=F("attempts") + 1)
    try:
        response = httpx.post(delivery.url, content=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(error=type(exc).__name__)
        raise WebhookFailed(type(exc).__name__) from None
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status_code=response.status_code)
    if response.status_code >= 300:
        raise WebhookFailed(f"HTTP {response.status_code}")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(delivered_at=timezone.now(), error="")


@shared_task(name="approvals.tasks.evaluate_alerts")  # type: ignore[untyped-decorator]  # celery ships no types
def evaluate_alerts() -> dict[str, int]:
    return alerts_evaluate()
