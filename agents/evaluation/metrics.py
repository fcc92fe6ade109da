"""An evaluation's aggregates, and whether two evaluations can be told apart.

- task success: the share of cases that passed (every expected call matched, no unexpected
  side effect, the expected outcome reached);
- proposal accuracy: matched expected calls over expected calls plus unexpected side-effecting
  proposals, summed over the cases;
- escalation rate and block rate: the share of judged proposals the policy sent to a person
  (``require_approval``) or blocked;
- means per case of steps (reasoning turns), tokens, cost and latency.

Two evaluations are too close to tell apart when either has fewer than ``MIN_CASES`` cases, or
when the 95 % Wilson intervals of their task success rates overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from agents.eval_models import EvalCaseResult

MIN_CASES = 30
Z_95 = 1.96


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def number(value: float) -> str:
    return f"{value:g}"


def money(value: float) -> str:
    return f"{value:.6f}"


# The aggregates shown, in order: key, label, how to write it.
METRICS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("task_success", "task success", percent),
    ("proposal_accuracy", "proposal accuracy", percent),
    ("escalation_rate", "escalation rate", percent),
    ("block_rate", "block rate", percent),
    ("mean_steps", "mean steps", number),
    ("mean_tokens", "mean tokens", number),
    ("mean_cost", "mean cost", money),
    ("mean_latency_ms", "mean latency (ms)", number),
]


def aggregates(results: Iterable[EvalCaseResult]) -> dict[str, Any]:
    rows = list(results)
    cases = len(rows)
    passed = sum(1 for row in rows if row.passed)
    judged = [p for row in rows for p in row.proposals if p.get("verdict") not in (None, "invalid")]
    denominator = sum(row.expected + row.unexpected for row in rows)
    low, high = wilson(passed, cases)
    return {
        "cases": cases,
        "passed": passed,
        "task_success": _share(passed, cases),
        "task_success_interval": [low, high],
        "proposal_accuracy": _share(sum(row.matched for row in rows), denominator) if denominator else 1.0,
        "proposals": len(judged),
        "escalation_rate": _share(sum(1 for p in judged if p["verdict"] == "require_approval"), len(judged)),
        "block_rate": _share(sum(1 for p in judged if p["verdict"] == "block"), len(judged)),
        "mean_steps": _mean([row.steps for row in rows]),
        "mean_tokens": _mean([row.prompt_tokens + row.completion_tokens for row in rows]),
        "total_cost": str(sum((row.cost for row in rows), Decimal("0"))),
        "mean_cost": float(sum((row.cost for row in rows), Decimal("0")) / cases) if cases else 0.0,
        "mean_latency_ms": _mean([row.latency_ms for row in rows]),
    }


def wilson(successes: int, total: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a share."""
    if total == 0:
        return 0.0, 1.0
    share = successes / total
    centre = share + Z_95**2 / (2 * total)
    spread = Z_95 * math.sqrt(share * (1 - share) / total + Z_95**2 / (4 * total**2))
    denominator = 1 + Z_95**2 / total
    return round(max(0.0, (centre - spread) / denominator), 4), round(min(1.0, (centre + spread) / denominator), 4)


@dataclass(frozen=True)
class Verdict:
    distinguishable: bool
    note: str


def compared(a: dict[str, Any], b: dict[str, Any]) -> Verdict:
    """Whether the task success rates of two evaluations differ beyond noise, and which rule said so."""
    fewest = min(a.get("cases", 0), b.get("cases", 0))
    if fewest < MIN_CASES:
        return Verdict(
            False,
            f"Too few cases to tell these apart: {fewest} in the smaller evaluation, fewer than {MIN_CASES}.",
        )
    (a_low, a_high), (b_low, b_high) = a["task_success_interval"], b["task_success_interval"]
    if a_low <= b_high and b_low <= a_high:
        return Verdict(
            False,
            "Too few cases to tell these apart: the 95 % intervals of task success overlap "
            f"([{a_low:.2f}, {a_high:.2f}] and [{b_low:.2f}, {b_high:.2f}]).",
        )
    return Verdict(True, "The task success rates differ beyond their 95 % intervals.")


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0
