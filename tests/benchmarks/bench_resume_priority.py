"""How long a reviewer's decision waits behind a burst of new runs.

Fills the "runs" queue with a burst of new runs, then decides a waiting approval and
measures decision → refund executed. Done twice: with the resume on its own "resumes"
queue (as shipped) and, for comparison, on the same FIFO queue as new runs.

    make bench   # prints the numbers
"""

from __future__ import annotations

import statistics
import time

import pytest
from django.db import transaction

from agents import runtime
from agents.definitions import agent_upsert
from agents.demo.data import RESEARCH_AGENT
from agents.models import LedgerEntry, Run, RunStatus, Ticket
from agents.tasks import advance_run
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest
from tests.conftest import grant_tools

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

BURST = 300
ROUNDS = 3


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.002)
    raise AssertionError("timed out")


def waiting_refund(agent, user):
    run = runtime.run_create(
        agent=agent,
        user=user,
        payload={"ticket_id": Ticket.objects.first().pk, "customer_email": "jane@example.com", "amount": 10},
    )
    wait_for(lambda: ApprovalRequest.objects.filter(run=run, status="pending").exists())
    return ApprovalRequest.objects.get(run=run, status="pending")


def measure(*, agent, research, starter, reviewer, fifo: bool, monkeypatch) -> float:
    approval = waiting_refund(agent, starter)
    before = LedgerEntry.objects.count()
    burst = Run.objects.bulk_create(
        [Run(agent=research, started_by=starter, input={"question": "refund"}) for _ in range(BURST)]
    )
    for run in burst:
        advance_run.delay(run.pk)
    with monkeypatch.context() as patch:
        if fifo:
            # Route the resume like a new run: it queues behind the burst.
            patch.setattr("agents.tasks.resume_run", advance_run)
        started = time.monotonic()
        with transaction.atomic():
            approval_request_decide(approval=approval, reviewer=reviewer, verdict="approve")
        wait_for(lambda: LedgerEntry.objects.count() > before)
        elapsed = time.monotonic() - started
    wait_for(
        lambda: not Run.objects.filter(pk__in=[r.pk for r in burst]).exclude(status=RunStatus.SUCCEEDED).exists(),
        timeout=300,
    )
    return elapsed


def test_resume_latency_under_burst(celery_worker, support_agent, starter, assigned_reviewer, monkeypatch):
    research, _ = agent_upsert(RESEARCH_AGENT)
    grant_tools(starter, ["kb_search"])
    results = {}
    for fifo in (False, True):
        samples = [
            measure(
                agent=support_agent,
                research=research,
                starter=starter,
                reviewer=assigned_reviewer,
                fifo=fifo,
                monkeypatch=monkeypatch,
            )
            for _ in range(ROUNDS)
        ]
        results["same FIFO queue" if fifo else "resumes queue"] = samples
    for name, samples in results.items():
        print(
            f"\ndecision -> refund executed with {BURST} new runs queued, {name}: "
            f"median {statistics.median(samples) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms "
            f"({ROUNDS} rounds)"
        )
    assert statistics.median(results["resumes queue"]) < statistics.median(results["same FIFO queue"])
