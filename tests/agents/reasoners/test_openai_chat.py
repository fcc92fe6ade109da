from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from agents import runtime
from agents.models import Agent, LedgerEntry, RunStatus, Step, Ticket
from tests.agents.fake_llm import FakeLLM, tool_call
from tests.conftest import grant_tools

pytestmark = pytest.mark.django_db


@pytest.fixture
def llm_agent(db):
    return Agent.objects.create(
        slug="llm",
        name="LLM",
        objective="Refund customers",
        scope="refunds only",
        tools=["kb_search", "issue_refund"],
        autonomy_level=4,
        reasoner="openai",
    )


@pytest.fixture
def llm_settings(settings):
    settings.LLM_API_KEY = "sk-test-secret-key-1234567890"
    settings.LLM_MODEL = "test-model"
    settings.LLM_MAX_RETRIES = 2
    settings.LLM_PRICE_PER_1K_PROMPT = Decimal("0.5")
    settings.LLM_PRICE_PER_1K_COMPLETION = Decimal("1.5")
    return settings


def start(agent, user, payload):
    run = runtime.run_create(agent=agent, user=user, payload=payload)
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_tool_calling_run_with_malformed_reply_and_retry(llm_agent, operator, llm_settings):
    grant_tools(operator, ["kb_search", "issue_refund"])
    replies = [
        503,  # retried
        tool_call("issue_refund", '{"amount": 12.5, "currency": "USD"'),  # malformed JSON
        tool_call("issue_refund", {"amount": 12.5, "currency": "USD", "reason": "late"}),
        {"content": "Refunded 12.50 USD."},
    ]
    with FakeLLM(replies) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        run = start(llm_agent, operator, {"customer": "jane@example.com", "card": "4111111111111111"})
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"text": "Refunded 12.50 USD."}
    assert LedgerEntry.objects.get().amount == Decimal("12.50")
    assert len(fake.requests) == 4
    first = fake.requests[0]
    assert first["model"] == "test-model"
    assert {t["function"]["name"] for t in first["tools"]} == {"kb_search", "issue_refund"}
    assert fake.headers[0]["Authorization"] == "Bearer sk-test-secret-key-1234567890"
    sent = repr(fake.requests)
    assert "jane@example.com" not in sent and "4111111111111111" not in sent
    # the malformed reply went back to the model as a tool error
    third = fake.requests[2]["messages"]
    assert third[-1]["role"] == "tool" and "not valid JSON" in third[-1]["content"]
    # Its call is still an object, and the assistant's content text, not null (llama-cpp-python
    # refuses null content; every server refuses arguments that are not an object).
    refused_call = third[-2]
    assert refused_call["content"] == "" and refused_call["tool_calls"][0]["function"]["arguments"] == "{}"
    reasoning = run.steps.filter(kind=Step.Kind.REASONING)
    assert reasoning.count() == 3
    assert all(step.prompt_tokens == 100 and step.completion_tokens == 20 for step in reasoning)
    # (100 * 0.5 + 20 * 1.5) / 1000 per step
    assert run.cost == Decimal("0.08") * 3


def test_endpoint_down_fails_the_run_with_a_reason(llm_agent, operator, llm_settings):
    with FakeLLM([500, 500, 500]) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        run = start(llm_agent, operator, {"q": "x"})
    assert run.status == RunStatus.FAILED
    assert "failed after 3 attempts" in run.error


def test_secrets_never_reach_logs(llm_agent, operator, llm_settings, caplog):
    with FakeLLM([500, {"content": "ok"}]) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        start(llm_agent, operator, {"q": "x"})
    assert "sk-test-secret-key" not in caplog.text


def tool_messages(messages):
    return [m for m in messages if m["role"] == "tool"]


def test_an_approved_call_is_answered_by_one_tool_message_right_after_it(
    support_agent, starter, assigned_reviewer, llm_settings
):
    """The decision and the observation of one call reach the model as a single tool message
    with the model's own call id (vLLM's Mistral tokenizer needs its 9-character ids)."""
    from approvals.decisions import approval_request_decide
    from approvals.models import ApprovalRequest

    Agent.objects.filter(pk=support_agent.pk).update(reasoner="openai", autonomy_level=2)
    ticket_id = Ticket.objects.get().pk
    replies = [
        tool_call(
            "issue_refund",
            {"ticket_id": ticket_id, "amount": 40, "currency": "USD", "reason": "late"},
            call_id="Ab3dE6gH9",
        ),
        {"content": "Refunded."},
    ]
    with FakeLLM(replies) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        payload = {
            "ticket_id": ticket_id,
            "customer_email": "jane@example.com",
            "amount": 40,
            "currency": "USD",
            "reason": "x",
        }
        run = start(Agent.objects.get(pk=support_agent.pk), starter, payload)
        assert run.status == RunStatus.WAITING
        approval = ApprovalRequest.objects.get(run=run)
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve", comment="fine")
        runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    messages = fake.requests[-1]["messages"]
    calls = [m for m in messages if m.get("tool_calls")]
    assert [c["tool_calls"][0]["id"] for c in calls] == ["Ab3dE6gH9"]
    answers = tool_messages(messages)
    assert [a["tool_call_id"] for a in answers] == ["Ab3dE6gH9"]
    assert messages.index(answers[0]) == messages.index(calls[0]) + 1
    content = json.loads(answers[0]["content"])
    assert content["comment"] == "fine" and content["status"] == "succeeded" and content["output"]


def test_an_agent_without_tools_sends_no_tools_list(llm_agent, operator, llm_settings):
    Agent.objects.filter(pk=llm_agent.pk).update(tools=[])
    with FakeLLM([{"content": "Nothing to do."}]) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        run = start(Agent.objects.get(pk=llm_agent.pk), operator, {"q": "x"})
    assert run.status == RunStatus.SUCCEEDED
    assert "tools" not in fake.requests[0] and "tool_choice" not in fake.requests[0]


def test_the_agents_model_settings_reach_the_server(llm_agent, operator, llm_settings):
    Agent.objects.filter(pk=llm_agent.pk).update(
        llm_model="gemma3-270m", temperature=0.2, max_tokens=256, tool_choice="kb_search"
    )
    with FakeLLM([{"content": "ok"}]) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        start(Agent.objects.get(pk=llm_agent.pk), operator, {"q": "x"})
    body = fake.requests[0]
    assert body["model"] == "gemma3-270m" and body["temperature"] == 0.2 and body["max_tokens"] == 256
    assert body["tool_choice"] == {"type": "function", "function": {"name": "kb_search"}}
    assert Step.objects.get(run__agent=llm_agent, kind=Step.Kind.REASONING).model == "gemma3-270m"


@pytest.mark.parametrize("choice,ok", [("auto", True), ("required", True), ("kb_search", True), ("send_email", False)])
def test_tool_choice_is_a_mode_or_one_of_the_agents_tools(llm_agent, choice, ok):
    from django.core.exceptions import ValidationError

    llm_agent.tool_choice = choice
    if ok:
        llm_agent.full_clean()
    else:
        with pytest.raises(ValidationError, match="tool_choice"):
            llm_agent.full_clean()


def test_a_reply_cut_off_at_the_token_limit_is_not_a_final_answer(llm_agent, operator, llm_settings):
    replies = [{"content": "The refund is", "finish_reason": "length"}, {"content": "Refund declined."}]
    with FakeLLM(replies) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        run = start(llm_agent, operator, {"q": "x"})
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"text": "Refund declined."}
    second = fake.requests[1]["messages"]
    assert second[-1]["role"] == "user" and "cut off at the token limit" in second[-1]["content"]
    assert not any(m.get("tool_calls") for m in second)


@pytest.mark.parametrize("status", [501, 500, 505])
def test_every_5xx_is_retried(llm_agent, operator, llm_settings, status):
    llm_settings.LLM_RETRY_MAX_SECONDS = 1
    with FakeLLM([status, {"content": "ok"}]) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        run = start(llm_agent, operator, {"q": "x"})
    assert run.status == RunStatus.SUCCEEDED and len(fake.requests) == 2


def test_a_4xx_other_than_the_retryable_ones_fails_at_once(llm_agent, operator, llm_settings):
    with FakeLLM([400, {"content": "ok"}]) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        run = start(llm_agent, operator, {"q": "x"})
    assert run.status == RunStatus.FAILED and "HTTP 400" in run.error and len(fake.requests) == 1


def test_retry_after_is_honoured_and_capped(settings):
    from email.utils import formatdate

    from agents.reasoners.openai_chat import retry_delay

    settings.LLM_RETRY_MAX_SECONDS = 30
    assert retry_delay(1, "7") == 7
    assert retry_delay(1, "3600") == 30
    assert 9 <= retry_delay(1, formatdate(time.time() + 10, usegmt=True)) <= 10
    # No header: full jitter under the exponential bound.
    delays = {retry_delay(3, None) for _ in range(50)}
    assert all(0 <= d <= 1.0 for d in delays) and len(delays) > 1


def test_a_429_waits_as_long_as_retry_after_says(llm_agent, operator, llm_settings, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("agents.reasoners.openai_chat.time.sleep", waits.append)
    with FakeLLM([(429, {"Retry-After": "2"}), {"content": "ok"}]) as fake:
        llm_settings.LLM_BASE_URL = fake.url
        run = start(llm_agent, operator, {"q": "x"})
    assert run.status == RunStatus.SUCCEEDED and waits == [2.0]


def test_dotted_tool_names_go_on_the_wire_in_openais_alphabet_and_come_back():
    """An MCP tool's ``server.tool`` is not a valid OpenAI function name; the request carries
    ``server__tool`` and the reply's call maps back to the registry's name."""
    from agents.reasoners.base import ModelSettings, RunView, ToolSpec
    from agents.reasoners.openai_chat import WIRE_NAME, parse_reply, request_body, wire_name

    tools = [ToolSpec("time.get_current_time", "now", {"type": "object"}), ToolSpec("x" * 80 + ".y", "long", {})]
    view = RunView(
        objective="o",
        scope="s",
        system_prompt="",
        input={},
        history=[{"type": "tool_call", "id": "c1", "tool": "time.get_current_time", "arguments": {}}],
        tools=tools,
        playbook={},
        model=ModelSettings(tool_choice="time.get_current_time"),
    )
    body = request_body(view)
    names = [t["function"]["name"] for t in body["tools"]]
    assert names[0] == "time__get_current_time"
    assert all(WIRE_NAME.fullmatch(name) for name in names) and len(set(names)) == 2
    assert body["tool_choice"]["function"]["name"] == "time__get_current_time"
    assert body["messages"][-1]["tool_calls"][0]["function"]["name"] == "time__get_current_time"
    reply = {
        "choices": [
            {
                "message": tool_call(names[1], {}, call_id="c2"),
                "finish_reason": "tool_calls",
            }
        ]
    }
    action = parse_reply(reply, names={wire_name(t.name): t.name for t in tools})
    assert action.tool == "x" * 80 + ".y" and action.call_id == "c2"
