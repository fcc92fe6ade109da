"""A support run reasoned by a real model: Gemma 3 270M behind llama-cpp-python's
OpenAI-compatible server. What the server received is recorded: it never sees the customer's
e-mail or card number; its refund proposals meet the policy's rules; a reviewer's edit is what
runs, once, through the ledger; and the audit log verifies.

Parallel tool calls are covered by the fake server (tests/agents/reasoners/test_parallel_calls.py):
this model and chat format return one call a reply."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from agents import runtime
from agents.models import Agent, LedgerEntry, RunStatus, Step, Ticket, ToolCall, ToolCallStatus
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus, Verdict
from audit.sealer import seal_pending
from tests.llm.server import MODEL_ALIAS, LlamaServer, RecordingRelay

# A model call takes 4 s on an idle machine and a minute on a loaded one; a run makes two or three.
pytestmark = [pytest.mark.llm, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

CARD = "4111 1111 1111 1111"
EMAIL = "jane@example.com"


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    server = LlamaServer(tmp_path_factory.mktemp("llm") / "llama-server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def relay(model_server):
    recorder = RecordingRelay(model_server.url)
    yield recorder
    recorder.close()


@pytest.fixture
def llm_support(support_agent, relay, settings):
    settings.LLM_BASE_URL = relay.url
    settings.LLM_MAX_RETRIES = 0
    settings.LLM_TIMEOUT_SECONDS = 240
    Agent.objects.filter(pk=support_agent.pk).update(
        reasoner="openai",
        autonomy_level=2,
        tools=["kb_search", "issue_refund"],
        llm_model=MODEL_ALIAS,
        temperature=0.0,
        max_tokens=256,
        # Small models answer "auto" with empty text; naming the tool makes them call it.
        tool_choice="issue_refund",
        max_steps=6,
    )
    return Agent.objects.get(pk=support_agent.pk)


def decide_all(approval: ApprovalRequest, reviewers, *, arguments: dict) -> None:
    """Approve with the reviewer's edit, by as many people as the rules ask for."""
    for reviewer in reviewers[: approval.required_approvals]:
        approval_request_decide(approval=approval, reviewer=reviewer, verdict="edit", arguments=arguments)


def test_a_refund_reasoned_by_a_real_model_is_checkpointed_like_any_other(
    llm_support, starter, assigned_reviewer, other_reviewer, relay, doorbells
):
    """The run is driven here, step by step (``doorbells`` keeps it off the broker, where a
    live worker of an earlier test would advance it too)."""
    from guardian.shortcuts import assign_perm

    assign_perm("review_agent", other_reviewer, llm_support)
    # The same ticket id in every database: with temperature 0 the model then sees the same
    # prompt, and answers the same, on every run.
    ticket = Ticket.objects.create(pk=700, subject="Broken kettle", customer_email=EMAIL)
    payload = {
        "ticket_id": ticket.pk,
        "customer_email": EMAIL,
        "amount": 120,
        "currency": "USD",
        # The card comes first: this server's chat template HTML-escapes what it is shown, and a
        # 270M model that copies an escaped quote at the end of a string writes broken JSON.
        "reason": f"Paid with card {CARD}; the kettle arrived broken",
    }
    edited = {"ticket_id": ticket.pk, "amount": 20, "currency": "USD", "reason": "partial refund for the kettle"}
    run = runtime.run_create(agent=llm_support, user=starter, payload=payload)
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    decided = None
    for _ in range(llm_support.max_steps):
        if run.status != RunStatus.WAITING:
            break
        approval = ApprovalRequest.objects.get(run=run, status=ApprovalStatus.PENDING)
        if decided is None:
            decide_all(approval, [assigned_reviewer, other_reviewer], arguments=edited)
            decided = approval
            runtime.run_advance(run_id=run.pk)
            run.refresh_from_db()
        else:
            runtime.run_cancel(run=run, user=starter, reason="enough for the test")  # it proposed again
            run.refresh_from_db()

    proposals = list(ToolCall.objects.filter(run=run).order_by("step"))
    seen = [(call.tool, call.arguments, call.verdict) for call in proposals]
    assert relay.bodies, "the model server received nothing"
    assert proposals, f"the model proposed no valid call; replies: {relay.replies}"

    # Redaction: the server never received the e-mail or the card number.
    sent = json.dumps(relay.bodies)
    assert EMAIL not in sent and CARD not in sent and CARD.replace(" ", "") not in sent
    assert all(
        body["model"] == MODEL_ALIAS and body["tool_choice"]["function"]["name"] == "issue_refund"
        for body in relay.bodies
    )

    # The policy: each refund the model proposed met the rules for its amount (level 2: a person
    # decides; over 5,000: blocked whatever the level).
    for call in proposals:
        amount = Decimal(str(call.arguments["amount"]))
        expected = Verdict.BLOCK if amount > 5000 else Verdict.REQUIRE_APPROVAL
        assert call.verdict == expected, seen

    # A decision and the ledger: the reviewer's edit is what ran, exactly once.
    assert decided is not None, f"no proposal waited for a person: {seen}"
    executed = ToolCall.objects.get(pk=decided.tool_call_id)
    assert executed.status == ToolCallStatus.SUCCEEDED and executed.arguments == edited, seen
    entry = LedgerEntry.objects.get()
    assert entry.amount == Decimal("20.00") and entry.ticket_id == ticket.pk
    # Every tool message answered its call once, right after it, in what the server received.
    for body in relay.bodies:
        messages = body["messages"]
        for position, message in enumerate(messages):
            for tool_call in message.get("tool_calls") or []:
                answer = messages[position + 1] if position + 1 < len(messages) else {}
                assert answer.get("tool_call_id") == tool_call["id"], messages
        ids = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
        assert len(ids) == len(set(ids)), messages

    reasoning = Step.objects.filter(run=run, kind=Step.Kind.REASONING)
    assert reasoning.exists() and all(step.model == MODEL_ALIAS and step.prompt_tokens > 0 for step in reasoning)

    # The audit log: sealed and verified, the proposals and the decision in it.
    seal_pending()
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "chain intact" in out.getvalue()
