"""Model prices: the shipped table, LLM_PRICES over it, and LLM_PRICE_PER_1K_* for the configured model."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from agents import runtime
from agents.models import Agent, RunStatus
from agents.pricing import FREE, PRICES, Price, model_cost, price_for
from config.env import env_prices
from tests.agents.fake_llm import FakeLLM, tool_call
from tests.conftest import grant_tools


@pytest.fixture(autouse=True)
def no_overrides(settings):
    settings.LLM_MODEL = "llama3.1"
    settings.LLM_PRICES = {}
    settings.LLM_PRICE_PER_1K_PROMPT = Decimal("0")
    settings.LLM_PRICE_PER_1K_COMPLETION = Decimal("0")
    return settings


@pytest.mark.parametrize(
    ("model", "table_name"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest name it starts with
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ],
)
def test_the_shipped_table_prices_common_models(model, table_name):
    assert price_for(model) == PRICES[table_name]
    assert price_for(model).prompt > 0 and price_for(model).completion > 0


def test_a_model_the_table_does_not_know_is_free():
    assert price_for("llama3.1") == FREE
    assert price_for("gpt-4ox") == FREE  # a name merely starting with a known one is another model
    assert model_cost(model="llama3.1", prompt_tokens=10_000, completion_tokens=10_000) == 0


def test_the_cost_is_per_thousand_tokens():
    # gpt-4o: 0.0025 per 1K prompt tokens, 0.01 per 1K completion tokens
    assert model_cost(model="gpt-4o", prompt_tokens=2000, completion_tokens=500) == Decimal("0.01")


def test_llm_prices_override_the_table_and_add_models(no_overrides):
    no_overrides.LLM_PRICES = {"gpt-4o": (Decimal("1"), Decimal("2")), "my-local": (Decimal("0.1"), Decimal("0"))}
    assert price_for("gpt-4o-2024-08-06") == Price(Decimal("1"), Decimal("2"))
    assert price_for("my-local") == Price(Decimal("0.1"), Decimal("0"))
    assert price_for("gpt-4o-mini") == PRICES["gpt-4o-mini"]  # the longest match is still the table's


def test_the_per_1k_variables_price_the_configured_model_only(no_overrides):
    no_overrides.LLM_MODEL = "gpt-4o"
    no_overrides.LLM_PRICES = {"gpt-4o": (Decimal("1"), Decimal("2"))}
    no_overrides.LLM_PRICE_PER_1K_PROMPT = Decimal("0.5")
    assert price_for("gpt-4o") == Price(Decimal("0.5"), Decimal("0"))
    assert price_for("gpt-4.1") == PRICES["gpt-4.1"]
    no_overrides.LLM_PRICE_PER_1K_PROMPT = Decimal("0")  # both 0, the default: not an override
    assert price_for("gpt-4o") == Price(Decimal("1"), Decimal("2"))


def test_llm_prices_is_read_from_json(monkeypatch):
    monkeypatch.setenv("LLM_PRICES", '{"gpt-4o": {"prompt": 0.002, "completion": 1}}')
    assert env_prices("LLM_PRICES") == {"gpt-4o": (Decimal("0.002"), Decimal("1"))}
    monkeypatch.setenv("LLM_PRICES", "")
    assert env_prices("LLM_PRICES") == {}


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        '["gpt-4o"]',
        '{"gpt-4o": 0.002}',
        '{"gpt-4o": {"prompt": 0.002}}',
        '{"gpt-4o": {"prompt": -1, "completion": 0}}',
        '{"gpt-4o": {"prompt": "0.1", "completion": 0}}',
        '{"gpt-4o": {"prompt": NaN, "completion": 0}}',
        '{"": {"prompt": 0, "completion": 0}}',
    ],
)
def test_a_bad_llm_prices_names_the_variable_and_the_shape(monkeypatch, raw):
    monkeypatch.setenv("LLM_PRICES", raw)
    with pytest.raises(ImproperlyConfigured, match=r"LLM_PRICES.*\{\"gpt-4o\": \{\"prompt\""):
        env_prices("LLM_PRICES")


@pytest.mark.django_db
def test_the_cost_budget_stops_a_run_with_the_shipped_prices(no_overrides, operator):
    no_overrides.LLM_MODEL = "gpt-4o"
    no_overrides.LLM_MAX_RETRIES = 0
    agent = Agent.objects.create(
        slug="priced",
        name="Priced",
        objective="Search",
        scope="read only",
        tools=["kb_search"],
        autonomy_level=4,
        reasoner="openai",
        max_cost=Decimal("0.0004"),
    )
    grant_tools(operator, ["kb_search"])
    replies = [tool_call("kb_search", {"query": "refunds"})] * 3
    with FakeLLM(replies) as fake:
        no_overrides.LLM_BASE_URL = fake.url
        run = runtime.run_create(agent=agent, user=operator, payload={"q": "refunds"})
        runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    # (100 * 0.0025 + 20 * 0.01) / 1000 = 0.00045 a step: over the budget after the first.
    assert run.status == RunStatus.FAILED and "Cost budget exhausted" in run.error
    assert run.cost == Decimal("0.00045")
    assert len(fake.requests) == 1
