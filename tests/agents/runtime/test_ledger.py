"""The tool-call ledger: validation, refusal, redaction and exactly-once execution."""

from __future__ import annotations

import pytest

from agents import runtime
from agents.models import Agent, LedgerEntry, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.reasoners.base import Action, RunView
from agents.reasoners.scripted import ScriptedReasoner
from agents.runtime import proposals
from agents.tools import arguments_hash
from tests.conftest import grant_tools

pytestmark = pytest.mark.django_db


def playbook_agent(slug="playbook", level=4, tools=("kb_search", "issue_refund", "send_email"), steps=()):
    return Agent.objects.create(
        slug=slug,
        name=slug,
        objective="test",
        scope="test",
        tools=list(tools),
        autonomy_level=level,
        playbook={"steps": list(steps)},
    )


def run_for(agent, user, payload=None):
    run = runtime.run_create(agent=agent, user=user, payload=payload or {})
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_schema_violation_unknown_tool_and_foreign_tool_are_refused_and_recorded(operator):
    grant_tools(operator, ["kb_search", "issue_refund", "send_email", "update_ticket"])
    agent = playbook_agent(
        steps=[
            {"id": "bad_args", "tool": "issue_refund", "arguments": {"amount": -5, "currency": "XXX"}},
            {"id": "unknown", "tool": "wire_money", "arguments": {"amount": 5}},
            {"id": "foreign", "tool": "update_ticket", "arguments": {"ticket_id": 1, "status": "closed"}},
            {"final": {"done": True}},
        ]
    )
    run = run_for(agent, operator)
    assert run.status == RunStatus.FAILED  # three invalid proposals in a row
    assert "3 invalid actions" in run.error
    refused = list(run.steps.filter(kind=Step.Kind.TOOL_CALL).values_list("input__tool", "verdict"))
    assert refused == [("issue_refund", "invalid"), ("wire_money", "invalid"), ("update_ticket", "invalid")]
    errors = list(run.steps.filter(kind=Step.Kind.OBSERVATION).values_list("error", flat=True))
    assert "amount" in errors[0] and "Unknown tool 'wire_money'" in errors[1]
    assert "not one of this agent's tools" in errors[2]
    assert not ToolCall.objects.exists() and not LedgerEntry.objects.exists()


def test_invalid_proposal_goes_back_to_the_reasoner_as_an_observation(operator):
    grant_tools(operator, ["issue_refund"])
    agent = playbook_agent(
        steps=[
            {"id": "bad", "tool": "issue_refund", "arguments": {"amount": "lots"}},
            {"id": "good", "tool": "issue_refund", "arguments": {"amount": 10}},
            {"final": {"first": "{{steps.bad.status}}", "second": "{{steps.good.status}}"}},
        ]
    )
    run = run_for(agent, operator)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"first": "invalid", "second": "succeeded"}
    assert LedgerEntry.objects.count() == 1


def test_reasoner_sees_placeholders_and_the_tool_gets_real_values(operator, monkeypatch):
    grant_tools(operator, ["send_email"])
    agent = playbook_agent(
        steps=[
            {
                "id": "mail",
                "tool": "send_email",
                "arguments": {"to": "{{input.email}}", "subject": "Card", "body": "Card {{input.card}} noted"},
            },
            {"final": {"ok": "{{steps.mail.status}}"}},
        ]
    )
    seen: list[RunView] = []
    original = ScriptedReasoner.next_action

    def spy(self, view: RunView) -> Action:
        seen.append(view)
        return original(self, view)

    monkeypatch.setattr(ScriptedReasoner, "next_action", spy)
    run = run_for(agent, operator, {"email": "jane@example.com", "card": "4111 1111 1111 1111"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    everything = repr([(v.input, v.history) for v in seen])
    assert "jane@example.com" not in everything and "4111 1111 1111 1111" not in everything
    assert "<EMAIL_1>" in everything and "<CARD_1>" in everything
    from agents.models import OutboxEmail

    email = OutboxEmail.objects.get()
    assert email.to == "jane@example.com" and "4111 1111 1111 1111" in email.body


def test_executor_refuses_arguments_that_differ_from_the_approval(operator):
    grant_tools(operator, ["issue_refund"])
    agent = playbook_agent(level=2, steps=[{"id": "r", "tool": "issue_refund", "arguments": {"amount": 10}}])
    run = run_for(agent, operator)
    call = ToolCall.objects.get(run=run)
    # an approval for 10 ...
    ToolCall.objects.filter(pk=call.pk).update(
        status=ToolCallStatus.APPROVED, approved_hash=arguments_hash(call.arguments)
    )
    # ... and arguments changed behind its back
    ToolCall.objects.filter(pk=call.pk).update(arguments={**call.arguments, "amount": 9999})
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)
    runtime.run_advance(run_id=run.pk)
    call.refresh_from_db()
    assert call.status == ToolCallStatus.FAILED
    assert "differ from the approved" in call.error
    assert not LedgerEntry.objects.exists()


def test_a_call_left_executing_is_reconciled_not_repeated(operator):
    grant_tools(operator, ["issue_refund"])
    agent = playbook_agent(
        level=4,
        steps=[
            {"id": "r", "tool": "issue_refund", "arguments": {"amount": 10}},
            {"final": {"r": "{{steps.r.output.ledger_id}}"}},
        ],
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    # Simulate a crash after the side effect and before the ledger was updated.
    from agents.tools import ToolContext, registry

    runtime.lease_take(run.pk)
    run.refresh_from_db()
    action = Action(kind="tool", tool="issue_refund", arguments={"amount": 10}, transcript={"playbook_step": "r"})
    from audit.redaction import Redactor

    proposals.propose(run, agent, action, Redactor())
    call = ToolCall.objects.get(run=run)
    ToolCall.objects.filter(pk=call.pk).update(status=ToolCallStatus.EXECUTING)
    registry["issue_refund"].run(call.arguments, ToolContext(idempotency_key=str(call.idempotency_key)))
    Run.objects.filter(pk=run.pk).update(lease_expires_at=None)  # the lease has expired

    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert LedgerEntry.objects.count() == 1
    assert ToolCall.objects.get(pk=call.pk).status == ToolCallStatus.SUCCEEDED


def test_second_delivery_while_leased_does_nothing(operator):
    grant_tools(operator, ["kb_search"])
    agent = playbook_agent(steps=[{"id": "s", "tool": "kb_search", "arguments": {"query": "x"}}])
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    assert lease is not None
    assert runtime.lease_take(run.pk) is None
    runtime.run_advance(run_id=run.pk)  # a redelivered copy returns at once
    assert Step.objects.filter(run=run).count() == 0


def test_tool_failures_are_retried_then_recorded(operator, monkeypatch, settings):
    settings.TOOL_RETRY_BASE_SECONDS = 0
    grant_tools(operator, ["kb_search"])
    agent = playbook_agent(
        steps=[
            {"id": "s", "tool": "kb_search", "arguments": {"query": "x"}},
            {"final": {"s": "{{steps.s.status}}", "e": "{{steps.s.error}}"}},
        ]
    )
    from agents import tools

    calls = []

    def broken(args, context):
        calls.append(context.idempotency_key)
        raise ConnectionError("search backend down")

    monkeypatch.setitem(
        tools.registry,
        "kb_search",
        tools.registry["kb_search"].__class__(**{**tools.registry["kb_search"].__dict__, "func": broken}),
    )
    run = run_for(agent, operator)
    assert len(calls) == settings.TOOL_MAX_ATTEMPTS and len(set(calls)) == 1
    assert run.result["s"] == "failed" and "search backend down" in run.result["e"]
