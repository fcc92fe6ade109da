"""Expected calls and outcomes, and how a proposal is held against them.

An expected call is ``{"tool": name, "arguments": {field: matcher}, "verdict": optional}``; a
matcher is ``{"equal": value}``, ``{"range": [low, high]}`` (inclusive, either end may be null)
or ``{"regex": pattern}`` (searched in a string). Fields not named are not compared; a dotted
field reaches into objects. An expected outcome is a run status ("succeeded", "failed",
"waiting"), or ``{"status": ..., "answer": {field: matcher}}``, or null: not compared.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from audit.types import JSON

MATCHER_KINDS = ("equal", "range", "regex")
PATTERN_MAX_LENGTH = 500
OUTCOMES = ("succeeded", "failed", "waiting")
VERDICTS = ("execute", "execute_and_review", "require_approval", "block")


def matcher_from(value: JSON) -> dict[str, Any]:
    """A matcher as written in a file: a bare value means ``equal``."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in MATCHER_KINDS:
        return dict(value)
    return {"equal": value}


def matcher_errors(matcher: Any) -> list[str]:
    if not isinstance(matcher, dict) or len(matcher) != 1 or next(iter(matcher)) not in MATCHER_KINDS:
        return [f"a matcher is one of {{{', '.join(MATCHER_KINDS)}: ...}}, not {_shown(matcher)}"]
    kind, value = next(iter(matcher.items()))
    if kind == "range":
        if not isinstance(value, list) or len(value) != 2 or not all(v is None or _number(v) for v in value):
            return ["range takes [low, high]: two numbers, either may be null"]
        if None not in value and value[0] > value[1]:
            return [f"range [{value[0]}, {value[1]}] is empty"]
    if kind == "regex":
        if not isinstance(value, str) or len(value) > PATTERN_MAX_LENGTH:
            return [f"regex takes a pattern of at most {PATTERN_MAX_LENGTH} characters"]
        try:
            re.compile(value)
        except re.error as exc:
            return [f"regex {value!r} does not compile: {exc}"]
    return []


def expected_calls_errors(calls: Any) -> list[str]:
    if not isinstance(calls, list):
        return ["expected calls are a list"]
    errors: list[str] = []
    for index, call in enumerate(calls):
        where = f"call {index + 1}"
        if not isinstance(call, dict) or not isinstance(call.get("tool"), str) or not call["tool"]:
            errors.append(f"{where}: give its tool")
            continue
        unknown = set(call) - {"tool", "arguments", "verdict"}
        if unknown:
            errors.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        if call.get("verdict") is not None and call["verdict"] not in VERDICTS:
            errors.append(f"{where}: verdict is one of {', '.join(VERDICTS)}")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict):
            errors.append(f"{where}: arguments are an object of field: matcher")
            continue
        errors += [f"{where}, {field}: {e}" for field, m in arguments.items() for e in matcher_errors(m)]
    return errors


def expected_outcome_errors(outcome: Any) -> list[str]:
    if outcome is None:
        return []
    status = outcome.get("status") if isinstance(outcome, dict) else outcome
    errors = [] if status in OUTCOMES else [f"the outcome is one of {', '.join(OUTCOMES)}"]
    if isinstance(outcome, dict):
        answer = outcome.get("answer", {})
        if set(outcome) - {"status", "answer"} or not isinstance(answer, dict):
            errors.append('an outcome object is {"status": ..., "answer": {field: matcher}}')
        else:
            errors += [f"answer {field}: {e}" for field, m in answer.items() for e in matcher_errors(m)]
    return errors


def mismatch(matcher: dict[str, Any], value: JSON) -> str:
    """Empty when ``value`` satisfies ``matcher``, else what is wrong, in words."""
    kind, expected = next(iter(matcher.items()))
    shown = _shown(value)
    if kind == "equal":
        return "" if _equal(expected, value) else f"{shown} is not {_shown(expected)}"
    if kind == "range":
        low, high = expected
        inside = _number(value) and (low is None or value >= low) and (high is None or value <= high)
        return "" if inside else f"{shown} is not in [{_end(low)}, {_end(high)}]"
    found = isinstance(value, str) and re.search(expected, value) is not None
    return "" if found else f"{shown} does not match /{expected}/"


def field_of(value: JSON, path: str) -> JSON:
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def arguments_mismatch(expected: dict[str, Any], arguments: JSON) -> str:
    problems = [
        f"{field} {problem}"
        for field, matcher in expected.items()
        if (problem := mismatch(matcher, field_of(arguments, field)))
    ]
    return "; ".join(problems)


@dataclass(frozen=True)
class CallScore:
    matched: int
    expected: int
    unexpected: int
    reasons: tuple[str, ...]


def calls_score(expected_calls: list[dict[str, Any]], proposals: list[dict[str, Any]]) -> CallScore:
    """The expected calls matched in order against the proposals: each takes the first later
    proposal of its tool that satisfies it. A side-effecting proposal no expected call took is
    unexpected; an extra read (a lookup) is not held against the case."""
    taken: set[int] = set()
    position = 0
    reasons: list[str] = []
    for call in expected_calls:
        found, why = _first_match(call, proposals, start=position)
        if found is None:
            reasons.append(why)
            continue
        taken.add(found)
        position = found + 1
    extra = [p for i, p in enumerate(proposals) if i not in taken and not p.get("read_only")]
    reasons += [f"unexpected {p['tool']} ({p.get('verdict', '')})" for p in extra]
    return CallScore(len(taken), len(expected_calls), len(extra), tuple(reasons))


def _first_match(call: dict[str, Any], proposals: list[dict[str, Any]], *, start: int) -> tuple[int | None, str]:
    tool = call["tool"]
    problems: list[str] = []
    for index in range(start, len(proposals)):
        proposal = proposals[index]
        if proposal["tool"] != tool:
            continue
        problem = arguments_mismatch(call.get("arguments") or {}, proposal.get("arguments"))
        if not problem and call.get("verdict") and call["verdict"] != proposal.get("verdict"):
            problem = f"verdict {proposal.get('verdict')} is not {call['verdict']}"
        if not problem:
            return index, ""
        problems.append(problem)
    if problems:
        return None, f"expected {tool}: {problems[0]}"
    return None, f"expected {tool}: not proposed"


def outcome_mismatch(expected: JSON, *, outcome: str, answer: JSON) -> str:
    if expected is None:
        return ""
    status = expected.get("status") if isinstance(expected, dict) else expected
    if status != outcome:
        return f"outcome {outcome} is not {status}"
    if isinstance(expected, dict):
        problem = arguments_mismatch(expected.get("answer") or {}, answer)
        return f"answer: {problem}" if problem else ""
    return ""


def _equal(expected: JSON, value: JSON) -> bool:
    # JSON equality: 1 and 1.0 are equal, true and 1 are not.
    return json.dumps(expected, sort_keys=True) == json.dumps(value, sort_keys=True) or (
        _number(expected) and _number(value) and expected == value
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _end(value: Any) -> str:
    return "…" if value is None else str(value)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:79] + "…"
