"""Runs through the real broker and a real worker process (both stacks).

These tests use ``transactional_db``: the worker is another process and must see
committed rows.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.utils import timezone

from agents import runtime
from agents.models import TERMINAL_RUN_STATUSES, Agent, LedgerEntry, OutboxEmail, Run, RunStatus, Step, Ticket
from agents.tasks import advance_run
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest
from tests.conftest import grant_tools

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def wait_for(predicate, *, timeout=30.0, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def status_of(run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


def finished(run, *, timeout=30.0) -> str:
    """Wait for the run to end; its final status, for the test to assert."""
    return wait_for(
        lambda: (status := status_of(run)) in TERMINAL_RUN_STATUSES and status,
        timeout=timeout,
        message="the run to end",
    )


def refund_payload(amount=120):
    return {
        "ticket_id": Ticket.objects.first().pk,
        "customer_email": "jane@example.com",
        "amount": amount,
        "currency": "USD",
    }


def test_support_run_waits_then_finishes_after_decisions(celery_worker, support_agent, starter, assigned_reviewer):
    run = runtime.run_create(agent=support_agent, user=starter, payload=refund_payload())
    seen = {status_of(run)}
    wait_for(lambda: seen.add(status_of(run)) or status_of(run) == RunStatus.WAITING, message="waiting")
    assert ApprovalRequest.objects.get(run=run).tool == "issue_refund"
    for tool in ("issue_refund", "send_email", "update_ticket"):
        approval = wait_for(
            lambda t=tool: ApprovalRequest.objects.filter(run=run, tool=t, status="pending").first(),
            message=f"{tool} approval",
        )
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    assert finished(run) == RunStatus.SUCCEEDED
    assert seen >= {RunStatus.QUEUED, RunStatus.WAITING}
    assert LedgerEntry.objects.count() == 1 and OutboxEmail.objects.count() == 1
    kinds = list(Step.objects.filter(run=run).order_by("index").values_list("kind", flat=True))
    assert kinds.count("tool_call") == 4 and kinds.count("decision") == 3 and kinds.count("observation") == 4


def test_duplicate_deliveries_never_double_an_effect(celery_worker, operator):
    grant_tools(operator, ["issue_refund", "send_email"])
    agent = Agent.objects.create(
        slug="burst",
        name="burst",
        objective="o",
        scope="s",
        tools=["issue_refund", "send_email"],
        autonomy_level=4,
        playbook={
            "steps": [{"id": f"r{i}", "tool": "issue_refund", "arguments": {"amount": i + 1}} for i in range(5)]
            + [
                {
                    "id": "mail",
                    "tool": "send_email",
                    "arguments": {"to": "jane@example.com", "subject": "s", "body": "b"},
                }
            ]
        },
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    for _ in range(6):  # the same task delivered again and again, concurrently
        advance_run.delay(run.pk)
    assert finished(run) == RunStatus.SUCCEEDED
    assert LedgerEntry.objects.count() == 5
    assert OutboxEmail.objects.count() == 1


def test_paused_runs_hold_no_worker(celery_worker, support_agent, starter):
    runs = [runtime.run_create(agent=support_agent, user=starter, payload=refund_payload()) for _ in range(8)]
    wait_for(
        lambda: Run.objects.filter(status=RunStatus.WAITING).count() == len(runs),
        timeout=60,
        message="all runs waiting",
    )
    from agents.definitions import agent_upsert
    from agents.demo.data import RESEARCH_AGENT
    from config.celery import app

    def active_tasks() -> list | None:
        replies = app.control.inspect(destination=[celery_worker.nodename], timeout=0.5).active() or {}
        return replies.get(celery_worker.nodename)

    # The worker (2 slots) holds no task while the eight wait for a person; the task that
    # paused the last one may still be handing back, hence a wait rather than one look.
    wait_for(lambda: active_tasks() == [], timeout=15, message="the worker to hold no task")
    research, _ = agent_upsert(RESEARCH_AGENT)
    grant_tools(starter, ["kb_search"])
    quick = runtime.run_create(agent=research, user=starter, payload={"question": "refund policy"})
    assert finished(quick, timeout=15) == RunStatus.SUCCEEDED
    assert Run.objects.filter(pk__in=[run.pk for run in runs], status=RunStatus.WAITING).count() == len(runs)


def test_worker_killed_mid_run_never_doubles_an_effect(celery_worker, operator):
    """SIGKILL the worker repeatedly while a 12-refund run executes; after recovery exactly 12 refunds exist."""
    grant_tools(operator, ["issue_refund"])
    agent = Agent.objects.create(
        slug="chaos",
        name="chaos",
        objective="o",
        scope="s",
        tools=["issue_refund"],
        autonomy_level=4,
        max_steps=50,
        playbook={
            "steps": [{"id": f"r{i}", "tool": "issue_refund", "arguments": {"amount": i + 1}} for i in range(12)]
        },
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    kills = 0
    while status_of(run) != RunStatus.SUCCEEDED and kills < 4:
        wait_for(
            lambda: Step.objects.filter(run=run).count() > 3 * kills + 1 or status_of(run) == "succeeded",
            timeout=30,
            interval=0.005,
            message="progress",
        )
        if status_of(run) == RunStatus.SUCCEEDED:
            break
        celery_worker.kill()
        kills += 1
        celery_worker.restart()
        # The dead worker's lease would run out after RUN_LEASE_SECONDS; skip the wait, then do
        # what beat's sweeper does: re-enqueue runs whose lease expired.
        Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(lease_expires_at=timezone.now())
        runtime.runs_recover()
    assert finished(run, timeout=60) == RunStatus.SUCCEEDED
    assert kills >= 1
    assert LedgerEntry.objects.count() == 12
    assert sorted(LedgerEntry.objects.values_list("amount", flat=True)) == list(range(1, 13))
    connection.close()
