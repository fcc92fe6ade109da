"""The decision API with the broker down: the answer says what the database holds.

The broker is really unreachable for this process (tests/outage.py). The decision is written,
answered 200, and its resume, refused by the broker, is marked (``resume_lost``) so that the
sweeper's next period rings it, and the run goes on.
"""

from __future__ import annotations

import logging
import time

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from agents import runtime
from agents.models import LedgerEntry, Run, RunStatus, Ticket
from agents.tasks import sweep
from approvals.models import ApprovalRequest, ApprovalStatus, Decision
from tests.agents.test_tasks import wait_for
from tests.outage import broker_hanging, broker_refusing

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def waiting_refund(agent, starter) -> ApprovalRequest:
    """A run waiting on a refund's approval, advanced in this process; no worker hears of it."""
    ticket = Ticket.objects.first()
    with broker_refusing():
        run = runtime.run_create(
            agent=agent,
            user=starter,
            payload={"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": 120, "currency": "USD"},
        )
        runtime.run_advance(run_id=run.pk)
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING
    return ApprovalRequest.objects.get(run=run, tool="issue_refund")


@pytest.mark.live
def test_a_decision_while_the_broker_refuses_answers_200_and_the_next_sweep_resumes_the_run(
    celery_worker, support_agent, starter, assigned_reviewer, caplog
):
    approval = waiting_refund(support_agent, starter)
    with broker_refusing(), caplog.at_level(logging.WARNING, logger="config.doorbell"):
        response = client_for(assigned_reviewer).post(
            f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json"
        )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == ApprovalStatus.APPROVED
    assert "could not enqueue agents.tasks.resume_run" in caplog.text
    decided = ApprovalRequest.objects.get(pk=approval.pk)
    assert decided.status == ApprovalStatus.APPROVED and decided.resume_lost
    assert Decision.objects.filter(request=approval).count() == 1
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.WAITING  # nobody was told
    assert LedgerEntry.objects.count() == 0
    # Beat's next sweep, with the broker back: the worker applies the decision.
    assert sweep()["resumes_rung"] == 1
    wait_for(lambda: LedgerEntry.objects.count() == 1, message="the approved refund")
    wait_for(
        lambda: ApprovalRequest.objects.filter(run_id=approval.run_id, tool="send_email").exists(),
        message="the run's next step",
    )
    assert LedgerEntry.objects.count() == 1
    assert Decision.objects.count() == 1


@pytest.mark.parametrize("channel_layer_too", [False, True], ids=["broker", "broker-and-channel-layer"])
def test_a_decision_while_the_broker_hangs_answers_within_seconds(
    support_agent, starter, assigned_reviewer, channel_layer_too
):
    approval = waiting_refund(support_agent, starter)
    with broker_hanging(channel_layer_too=channel_layer_too):
        started = time.monotonic()
        response = client_for(assigned_reviewer).post(
            f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "reject", "comment": "no"}, format="json"
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.content
    assert response.json()["status"] == ApprovalStatus.REJECTED
    # The resume's two tries, and the inbox push (BROKER_TIMEOUT_SECONDS) when Redis hangs for it too.
    assert elapsed < (3 if channel_layer_too else 2) * settings.BROKER_TIMEOUT_SECONDS + 2
    assert ApprovalRequest.objects.get(pk=approval.pk).resume_lost
    assert Decision.objects.filter(request=approval).count() == 1
