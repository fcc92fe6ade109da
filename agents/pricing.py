"""What a model's tokens cost: a shipped table of list prices, overridable per deployment.

Prices are US dollars per 1,000 tokens, prompt and completion. The order of precedence:

1. for the configured model (``LLM_MODEL``), ``LLM_PRICE_PER_1K_PROMPT`` /
   ``LLM_PRICE_PER_1K_COMPLETION`` when either is set above 0;
2. ``LLM_PRICES``, a JSON object ``{"model": {"prompt": 0.0025, "completion": 0.01}}``, over
   the table below (a name in either, the closest match wins);
3. nothing known: 0 (local models served by Ollama, vLLM or llama.cpp cost nothing per token).

A name is looked up as given, then without a provider prefix (``openai/gpt-4o``), then by the
longest table name it starts with followed by ``-`` (a dated version such as
``gpt-4o-2024-08-06`` costs what ``gpt-4o`` costs, ``gpt-4o-mini-2024-07-18`` what
``gpt-4o-mini`` costs).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings


@dataclass(frozen=True)
class Price:
    prompt: Decimal  # per 1,000 prompt tokens
    completion: Decimal  # per 1,000 completion tokens

    def cost(self, *, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (Decimal(prompt_tokens) * self.prompt + Decimal(completion_tokens) * self.completion) / 1000


FREE = Price(Decimal("0"), Decimal("0"))


def _price(prompt: str, completion: str) -> Price:
    return Price(Decimal(prompt), Decimal(completion))


# List prices of the providers' standard tiers (USD per 1K tokens, as published in 2025);
# a deployment with other terms sets LLM_PRICES.
PRICES: dict[str, Price] = {
    "gpt-5": _price("0.00125", "0.01"),
    "gpt-5-mini": _price("0.00025", "0.002"),
    "gpt-5-nano": _price("0.00005", "0.0004"),
    "gpt-4.1": _price("0.002", "0.008"),
    "gpt-4.1-mini": _price("0.0004", "0.0016"),
    "gpt-4.1-nano": _price("0.0001", "0.0004"),
    "gpt-4o": _price("0.0025", "0.01"),
    "gpt-4o-mini": _price("0.00015", "0.0006"),
    "gpt-4-turbo": _price("0.01", "0.03"),
    "gpt-4": _price("0.03", "0.06"),
    "gpt-3.5-turbo": _price("0.0005", "0.0015"),
    "o1": _price("0.015", "0.06"),
    "o3": _price("0.002", "0.008"),
    "o3-mini": _price("0.0011", "0.0044"),
    "o4-mini": _price("0.0011", "0.0044"),
    "claude-opus-4": _price("0.015", "0.075"),
    "claude-sonnet-4": _price("0.003", "0.015"),
    "claude-3-7-sonnet": _price("0.003", "0.015"),
    "claude-3-5-sonnet": _price("0.003", "0.015"),
    "claude-3-5-haiku": _price("0.0008", "0.004"),
    "claude-3-haiku": _price("0.00025", "0.00125"),
    "gemini-2.5-pro": _price("0.00125", "0.01"),
    "gemini-2.5-flash": _price("0.0003", "0.0025"),
    "gemini-2.0-flash": _price("0.0001", "0.0004"),
    "gemini-1.5-pro": _price("0.00125", "0.005"),
    "gemini-1.5-flash": _price("0.000075", "0.0003"),
    "mistral-large-latest": _price("0.002", "0.006"),
    "mistral-small-latest": _price("0.0002", "0.0006"),
}


def _lookup(table: dict[str, Price], model: str) -> Price | None:
    base = model.rpartition("/")[2]
    for name in (model, base):
        if name in table:
            return table[name]
    prefixes = [name for name in table if base.startswith(name + "-")]
    return table[max(prefixes, key=len)] if prefixes else None


def price_for(model: str) -> Price:
    if model and model == settings.LLM_MODEL:
        configured = Price(settings.LLM_PRICE_PER_1K_PROMPT, settings.LLM_PRICE_PER_1K_COMPLETION)
        if configured.prompt > 0 or configured.completion > 0:
            return configured
    overrides = {name: Price(prompt, completion) for name, (prompt, completion) in settings.LLM_PRICES.items()}
    # One table, so that the closest name wins: an override of gpt-4o does not price gpt-4o-mini.
    return _lookup({**PRICES, **overrides}, model) or FREE


def model_cost(*, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    return price_for(model).cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
