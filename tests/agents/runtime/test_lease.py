"""Leases, time slices and tool timeouts: a run survives slow parts without doing anything twice."""

from __future__ import annotations

import threading
import time

import pytest
from django.utils import timezone

from agents import runtime, tools
from agents.models import Agent, Run, RunStatus, Step, ToolCall
from agents.reasoners.base import Action
from agents.runtime import lease as lease_module
from agents.runtime import loop, proposals
from audit.models import AuditEvent
from audit.redaction import Redactor
from tests.conftest import grant_tools
from tests.live import wait_until


def playbook_agent(steps, tools_=("kb_search", "issue_refund"), level=4) -> Agent:
    return Agent.objects.create(
        slug="limits",
        name="limits",
        objective="test",
        scope="test",
        tools=list(tools_),
        autonomy_level=level,
        playbook={"steps": list(steps)},
    )


@pytest.mark.django_db
def test_a_worker_that_lost_its_lease_writes_nothing(operator):
    grant_tools(operator, ["issue_refund"])
    agent = playbook_agent([{"id": "r", "tool": "issue_refund", "arguments": {"amount": 10}}])
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    assert lease is not None
    # The lease ran out while this worker was thinking, and another worker took the run.
    Run.objects.filter(pk=run.pk).update(lease_owner="another-worker")
    run.refresh_from_db()
    events = AuditEvent.objects.count()
    action = Action(kind="tool", tool="issue_refund", arguments={"amount": 10}, transcript={"playbook_step": "r"})
    with pytest.raises(runtime.LeaseLost):
        proposals.propose(run, agent, action, Redactor(), lease=lease)
    with pytest.raises(runtime.LeaseLost):
        loop._complete(run, Action(kind="final", answer={"done": True}), Redactor(), lease=lease)
    assert not ToolCall.objects.exists() and not Step.objects.exists()
    assert AuditEvent.objects.count() == events
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.lease_owner == "another-worker"


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_while_the_worker_is_busy(operator, settings, doorbells):
    settings.RUN_LEASE_SECONDS = 1
    agent = playbook_agent([{"final": {"done": True}}])
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    first_expiry = Run.objects.get(pk=run.pk).lease_expires_at
    with lease_module.LeaseKeeper(lease) as keeper:
        # Past the first lease's end: without renewal another worker could take the run now.
        wait_until(lambda: timezone.now() > first_expiry, timeout=10, interval=0.05, what="the first lease to end")
        assert runtime.lease_take(run.pk) is None
        assert not keeper.lost
    assert Run.objects.get(pk=run.pk).lease_expires_at > first_expiry


@pytest.mark.django_db
def test_long_runs_go_on_in_fresh_tasks(operator, settings):
    settings.RUN_SLICE_SECONDS = 0  # hand back at every step boundary
    grant_tools(operator, ["kb_search"])
    agent = playbook_agent(
        [
            {"id": "a", "tool": "kb_search", "arguments": {"query": "refund"}},
            {"id": "b", "tool": "kb_search", "arguments": {"query": "policy"}},
            {"final": {"done": True}},
        ]
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    tasks = 0
    while run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED) and tasks < 20:
        runtime.run_advance(run_id=run.pk)
        tasks += 1
        run.refresh_from_db()
        assert run.lease_owner == ""  # each task let go of the run
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert tasks >= 3  # two tool calls and the answer, each in a task of its own
    assert ToolCall.objects.filter(run=run).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_hung_tool_times_out_without_holding_the_worker(operator, settings, monkeypatch, doorbells):
    settings.TOOL_RETRY_BASE_SECONDS = 0
    settings.TOOL_MAX_ATTEMPTS = 2
    grant_tools(operator, ["kb_search"])
    release = threading.Event()

    def hung(args, context):
        release.wait(30)
        return {"results": []}

    original = tools.registry["kb_search"]
    monkeypatch.setitem(
        tools.registry, "kb_search", original.__class__(**{**original.__dict__, "func": hung, "timeout_seconds": 0.2})
    )
    agent = playbook_agent(
        [
            {"id": "s", "tool": "kb_search", "arguments": {"query": "x"}},
            {"final": {"status": "{{steps.s.status}}", "error": "{{steps.s.error}}"}},
        ]
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    started = time.monotonic()
    try:
        runtime.run_advance(run_id=run.pk)
    finally:
        release.set()
    elapsed = time.monotonic() - started
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result["status"] == "failed" and "did not finish within 0.2 s" in run.result["error"]
    assert ToolCall.objects.get(run=run).attempts == 2
    assert elapsed < 10  # two attempts of 0.2 s, not the 30 s the tool would hang


def test_tool_calls_share_a_kept_thread_until_one_hangs():
    from agents.runtime.ledger import execute_with_timeout

    release = threading.Event()
    threads: list[int] = []

    def where(args, context):
        threads.append(threading.get_ident())
        if args.query == "hang":
            release.wait(30)
        return {"results": []}

    original = tools.registry["kb_search"]
    tool = original.__class__(**{**original.__dict__, "func": where, "timeout_seconds": 0.2})
    context = tools.ToolContext(idempotency_key="k")
    try:
        execute_with_timeout(tool, {"query": "a"}, context)
        execute_with_timeout(tool, {"query": "b"}, context)
        with pytest.raises(TimeoutError):
            execute_with_timeout(tool, {"query": "hang"}, context)
        # The hung call keeps its thread; the next call does not wait behind it.
        assert execute_with_timeout(tool, {"query": "c"}, context) == {"results": []}
    finally:
        release.set()
    assert threads[0] == threads[1] == threads[2] != threads[3] != threading.get_ident()


@pytest.mark.django_db(transaction=True)
def test_a_write_tool_that_times_out_is_left_for_a_person_not_retried(operator, settings, monkeypatch, doorbells):
    from agents.models import LedgerEntry, ToolCallStatus

    settings.TOOL_RETRY_BASE_SECONDS = 0
    grant_tools(operator, ["issue_refund"])
    release = threading.Event()
    calls: list[str] = []

    def hung(args, context):
        calls.append(context.idempotency_key)
        release.wait(30)
        raise RuntimeError("released")  # never applies the effect here

    original = tools.registry["issue_refund"]
    monkeypatch.setitem(
        tools.registry,
        "issue_refund",
        original.__class__(**{**original.__dict__, "func": hung, "timeout_seconds": 0.2}),
    )
    agent = playbook_agent([{"id": "r", "tool": "issue_refund", "arguments": {"amount": 10}}, {"final": {}}])
    run = runtime.run_create(agent=agent, user=operator, payload={})
    try:
        runtime.run_advance(run_id=run.pk)
    finally:
        release.set()
    run.refresh_from_db()
    call = ToolCall.objects.get(run=run)
    assert len(calls) == 1  # not retried: the first attempt might still act
    assert call.status == ToolCallStatus.UNKNOWN and "reconcile" in call.error
    assert run.status == RunStatus.FAILED and not LedgerEntry.objects.exists()


@pytest.mark.django_db
def test_a_call_a_person_approved_runs_even_when_the_step_budget_is_spent(support_agent, starter, assigned_reviewer):
    from agents.models import LedgerEntry, Ticket
    from approvals.decisions import approval_request_decide
    from approvals.models import ApprovalRequest

    support_agent.max_steps = 2  # kb_search, then the refund proposal: the budget is spent
    support_agent.save()
    payload = {"ticket_id": Ticket.objects.first().pk, "customer_email": "jane@example.com", "amount": 120}
    run = runtime.run_create(agent=support_agent, user=starter, payload=payload)
    runtime.run_advance(run_id=run.pk)
    approval = ApprovalRequest.objects.get(run=run, tool="issue_refund")
    approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert LedgerEntry.objects.count() == 1  # the approved refund ran
    assert run.status == RunStatus.FAILED and "Step budget exhausted" in run.error
