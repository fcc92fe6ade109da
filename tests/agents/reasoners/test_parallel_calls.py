"""A reply with several tool calls: each is its own proposal through the policy, the run goes
on once every one is resolved, and the tool messages answer them in the model's order."""

from __future__ import annotations

import json

import pytest

from agents import runtime
from agents.models import Agent, LedgerEntry, RunStatus, Ticket, ToolCall, ToolCallStatus
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus
from tests.agents.fake_llm import FakeLLM

pytestmark = pytest.mark.django_db


def payload() -> dict:
    return {"ticket_id": ticket(), "customer_email": "jane@example.com", "amount": 40, "currency": "USD"}


def ticket() -> int:
    return Ticket.objects.get().pk


def calls(*specs: tuple[str, str, dict]) -> dict:
    return {
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
            for call_id, name, arguments in specs
        ],
    }


SEARCH = ("Kb9xY8zW7", "kb_search", {"query": "refund policy"})


def refund() -> tuple[str, str, dict]:
    return ("Rf1aB2cD3", "issue_refund", {"ticket_id": ticket(), "amount": 40, "currency": "USD", "reason": "late"})


def close() -> tuple[str, str, dict]:
    return ("Tk5qR4sT3", "update_ticket", {"ticket_id": ticket(), "status": "solved"})


@pytest.fixture
def llm_support(support_agent, settings):
    settings.LLM_MODEL = "test-model"
    settings.LLM_MAX_RETRIES = 0
    Agent.objects.filter(pk=support_agent.pk).update(reasoner="openai", autonomy_level=2, on_reject="stop")
    return Agent.objects.get(pk=support_agent.pk)


def advance(run):
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def answers_in_order(messages):
    """(call id of each assistant call, call id of the tool message right after it)."""
    pairs = []
    for position, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            after = messages[position + 1]
            pairs.append((call["id"], after.get("tool_call_id")))
    return pairs


def test_a_read_and_a_refund_in_one_reply(llm_support, starter, assigned_reviewer, settings):
    with FakeLLM([calls(SEARCH, refund()), {"content": "Refunded."}]) as fake:
        settings.LLM_BASE_URL = fake.url
        run = advance(runtime.run_create(agent=llm_support, user=starter, payload=payload()))
        assert run.status == RunStatus.WAITING
        assert [c.tool for c in ToolCall.objects.filter(run=run).order_by("step")] == ["kb_search", "issue_refund"]
        approval = ApprovalRequest.objects.get(run=run)
        assert approval.tool == "issue_refund"
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
        run = advance(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert len(fake.requests) == 2
    assert answers_in_order(fake.requests[1]["messages"]) == [(SEARCH[0], SEARCH[0]), ("Rf1aB2cD3", "Rf1aB2cD3")]
    assert LedgerEntry.objects.count() == 1


def test_two_calls_that_wait_each_get_an_approval_and_the_run_goes_on_after_both(
    llm_support, starter, assigned_reviewer, settings
):
    with FakeLLM([calls(refund(), close()), {"content": "Done."}]) as fake:
        settings.LLM_BASE_URL = fake.url
        run = advance(runtime.run_create(agent=llm_support, user=starter, payload=payload()))
        approvals = {a.tool: a for a in ApprovalRequest.objects.filter(run=run)}
        assert set(approvals) == {"issue_refund", "update_ticket"} and run.status == RunStatus.WAITING

        approval_request_decide(approval=approvals["update_ticket"], reviewer=assigned_reviewer, verdict="approve")
        run = advance(run)
        # One still waits: nothing ran, the model was not asked again, the run waits again.
        assert run.status == RunStatus.WAITING
        assert len(fake.requests) == 1 and not LedgerEntry.objects.exists()
        assert ToolCall.objects.get(run=run, tool="update_ticket").status == ToolCallStatus.APPROVED

        approval_request_decide(approval=approvals["issue_refund"], reviewer=assigned_reviewer, verdict="approve")
        run = advance(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert len(fake.requests) == 2
    assert answers_in_order(fake.requests[1]["messages"]) == [("Rf1aB2cD3", "Rf1aB2cD3"), ("Tk5qR4sT3", "Tk5qR4sT3")]
    statuses = set(ToolCall.objects.filter(run=run).values_list("status", flat=True))
    assert statuses == {ToolCallStatus.SUCCEEDED}


def test_a_rejection_that_stops_the_run_cancels_the_other_waiting_approval(
    llm_support, starter, assigned_reviewer, settings
):
    with FakeLLM([calls(refund(), close())]) as fake:
        settings.LLM_BASE_URL = fake.url
        run = advance(runtime.run_create(agent=llm_support, user=starter, payload=payload()))
        refund_approval = ApprovalRequest.objects.get(run=run, tool="issue_refund")
        approval_request_decide(approval=refund_approval, reviewer=assigned_reviewer, verdict="reject", comment="no")
        run = advance(run)
    assert run.status == RunStatus.REJECTED
    assert ApprovalRequest.objects.get(run=run, tool="update_ticket").status == ApprovalStatus.CANCELLED
    assert not LedgerEntry.objects.exists() and len(fake.requests) == 1


def test_a_decision_made_while_the_run_held_its_lease_is_not_lost(
    llm_support, starter, assigned_reviewer, settings, doorbells, django_capture_on_commit_callbacks
):
    """The second approval is decided while a worker applies the first: its doorbell finds the
    run held and does nothing; the run, once it waits again, sees the decision and rings itself."""
    from agents.runtime.lease import lease_take
    from agents.runtime.proposals import wait_for_the_rest
    from agents.runtime.resume import decisions_apply

    with FakeLLM([calls(refund(), close())]) as fake:
        settings.LLM_BASE_URL = fake.url
        run = advance(runtime.run_create(agent=llm_support, user=starter, payload=payload()))
    approvals = {a.tool: a for a in ApprovalRequest.objects.filter(run=run)}
    approval_request_decide(approval=approvals["update_ticket"], reviewer=assigned_reviewer, verdict="approve")
    lease = lease_take(run.pk)
    assert lease is not None
    assert decisions_apply(run, lease=lease)
    approval_request_decide(approval=approvals["issue_refund"], reviewer=assigned_reviewer, verdict="approve")
    assert lease_take(run.pk) is None  # what the second doorbell's worker finds
    doorbells.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert wait_for_the_rest(run, lease=lease)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    assert doorbells == [("resume", run.pk)]
