"""Guardrails: checks on run input, proposed arguments, tool output and the final answer.

A hit is either a ``flag`` (a person must look: before the action runs, before a flagged
final answer becomes the result, or, for a tool's output, in an after-the-fact review item) or
a ``block`` (the action is stopped at every level and the reasoner is told why; a blocked
output is withheld from the reasoner and also goes to review). Safety
filters are pluggable: ``settings.SAFETY_FILTERS`` lists dotted paths of classes with a
``check(text) -> list[GuardrailHit]`` method; the built-in one uses keywords and regexes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Protocol
from urllib.parse import urlparse

from django.conf import settings
from django.utils.module_loading import import_string

from audit.types import JSON, JSONObject

URL = re.compile(r"https?://[^\s\"'<>]+", re.I)


class GuardrailEffect(StrEnum):
    FLAG = "flag"
    BLOCK = "block"


@dataclass(frozen=True)
class GuardrailHit:
    name: str
    effect: GuardrailEffect
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "effect": self.effect, "message": self.message}


class KeywordSafetyFilter:
    """Blocks or flags text that matches configured patterns (case-insensitive)."""

    def __init__(self, *, block: list[str] | None = None, flag: list[str] | None = None) -> None:
        self.block = [re.compile(p, re.I) for p in (block if block is not None else settings.GUARDRAIL_BLOCK_PATTERNS)]
        self.flag = [re.compile(p, re.I) for p in (flag if flag is not None else settings.GUARDRAIL_FLAG_PATTERNS)]

    def check(self, text: str) -> list[GuardrailHit]:
        hits = [
            GuardrailHit("blocklist", GuardrailEffect.BLOCK, f"matches the blocked pattern {p.pattern!r}")
            for p in self.block
            if p.search(text)
        ]
        hits += [
            GuardrailHit("safety", GuardrailEffect.FLAG, f"matches the flagged pattern {p.pattern!r}")
            for p in self.flag
            if p.search(text)
        ]
        return hits


class SafetyFilter(Protocol):
    """What a class named in ``settings.SAFETY_FILTERS`` provides (KeywordSafetyFilter is one)."""

    def check(self, text: str) -> list[GuardrailHit]: ...


@cache
def safety_filters() -> list[SafetyFilter]:
    return [import_string(path)() for path in settings.SAFETY_FILTERS]


def _text(value: JSON) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def check_text(value: JSON) -> list[GuardrailHit]:
    text = _text(value)
    hits: list[GuardrailHit] = []
    for safety_filter in safety_filters():
        hits.extend(safety_filter.check(text))
    return hits


def check_urls(value: JSON) -> list[GuardrailHit]:
    allowed = [d.lower() for d in settings.GUARDRAIL_ALLOWED_URL_DOMAINS]
    if not allowed:
        return []
    hits = []
    for url in URL.findall(_text(value)):
        host = (urlparse(url).hostname or "").lower()
        if not any(host == d or host.endswith("." + d) for d in allowed):
            hits.append(
                GuardrailHit("url_domain", GuardrailEffect.BLOCK, f"links to {host}, which is not an allowed domain")
            )
    return hits


def check_numbers(tool: str, value: JSON) -> list[GuardrailHit]:
    hits = []
    for field, bound in settings.GUARDRAIL_NUMERIC_BOUNDS.get(tool, {}).items():
        number = value.get(field) if isinstance(value, dict) else None
        if isinstance(number, str):
            try:
                number = float(number)
            except ValueError:
                continue
        if isinstance(number, int | float) and not bound[0] <= number <= bound[1]:
            message = f"{tool}.{field}={number} is outside {bound[0]}..{bound[1]}"
            hits.append(GuardrailHit("numeric_bound", GuardrailEffect.FLAG, message))
    return hits


def check_input(payload: JSON) -> list[GuardrailHit]:
    """Pre-checks on a run's input (its size and schema are checked by the run service)."""
    return check_urls(payload) + [hit for hit in check_text(payload) if hit.effect == GuardrailEffect.BLOCK]


def check_arguments(tool: str, arguments: JSONObject) -> list[GuardrailHit]:
    return check_text(arguments) + check_urls(arguments) + check_numbers(tool, arguments)


def check_output(tool: str, output: JSON) -> list[GuardrailHit]:
    return check_text(output) + check_numbers(tool, output)


def check_final(answer: JSON) -> list[GuardrailHit]:
    return check_text(answer)
