from __future__ import annotations

from decimal import Decimal

import pytest

from agents import runtime
from agents.models import Agent, LedgerEntry, RunStatus, Step
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
