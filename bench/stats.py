"""Numbers of a benchmark run: percentiles of samples, a measure against its floor and goal,
the printed table and the committed JSON. Pure Python: no Django, so it is quick to test."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The percentiles the goals are stated in; "p99" of 20 samples is simply their largest.
PERCENTILES = (50, 95, 99)
STATS = ("p50", "p95", "p99", "max")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile by linear interpolation between the closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Goal:
    """``stat`` (p50, p95, p99, max) at most (``at_most``) or at least ``limit``."""

    stat: str
    limit: float
    at_most: bool = True

    def met(self, measure: Measure) -> bool | None:
        value = measure.value(self.stat)
        if value is None:
            return None
        return value <= self.limit if self.at_most else value >= self.limit

    def text(self) -> str:
        return f"{self.stat} {'≤' if self.at_most else '≥'} {self.limit:g}"


@dataclass
class Measure:
    """One named measure of a run: its samples (or one rate), its floor and its goals.

    A rate (``unit`` ending in "/s") has one value: p50 = p95 = p99 = max = the rate, and ``n``
    counts what was done to get it. ``note`` says why a measure is not available."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    n: int | None = None
    floor: float | None = None
    goals: list[Goal] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def rate(cls, name: str, *, count: int, seconds: float, unit: str = "/s", **kwargs: Any) -> Measure:
        return cls(name=name, unit=unit, samples=[count / seconds], n=count, **kwargs)

    @classmethod
    def missing(cls, name: str, *, unit: str, note: str, goals: list[Goal] | None = None) -> Measure:
        return cls(name=name, unit=unit, goals=goals or [], note=note)

    @property
    def available(self) -> bool:
        return bool(self.samples)

    @property
    def count(self) -> int:
        return self.n if self.n is not None else len(self.samples)

    def value(self, stat: str) -> float | None:
        if not self.samples:
            return None
        if stat == "max":
            return max(self.samples)
        return percentile(self.samples, float(stat.removeprefix("p")))

    @property
    def ratio(self) -> float | None:
        """p50 over the floor: how many times the bare mechanism the measure costs."""
        p50 = self.value("p50")
        if p50 is None or not self.floor:
            return None
        return p50 / self.floor

    def met(self) -> bool | None:
        """True when every goal holds, False when one fails, None with no goal or no number."""
        verdicts = [goal.met(self) for goal in self.goals]
        if not verdicts or None in verdicts:
            return None
        return all(verdicts)

    def as_json(self) -> dict[str, Any]:
        stats = {stat: _rounded(self.value(stat)) for stat in STATS}
        body: dict[str, Any] = {
            **stats,
            "n": self.count if self.available else 0,
            "unit": self.unit,
            "floor": _rounded(self.floor),
            "ratio": _rounded(self.ratio),
            "goal": ", ".join(goal.text() for goal in self.goals) or None,
            "met": self.met(),
        }
        if self.note:
            body["note"] = self.note
        body.update(self.extra)
        return body


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


HEADER = ("measure", "p50", "p95", "p99", "max", "n", "unit", "floor", "ratio", "goal", "met")


def table(measures: Sequence[Measure]) -> str:
    """The printed table: one line per measure, "not available" where it could not be taken."""
    rows: list[tuple[str, ...]] = [HEADER]
    for m in measures:
        goal = ", ".join(goal.text() for goal in m.goals) or "-"
        if not m.available:
            rows.append((m.name, "not available", "", "", "", "", m.unit, "", "", goal, m.note))
            continue
        met = m.met()
        rows.append(
            (
                m.name,
                *(_cell(m.value(stat)) for stat in STATS),
                str(m.count),
                m.unit,
                _cell(m.floor),
                "-" if m.ratio is None else f"{m.ratio:.1f}x",
                goal,
                "-" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def results_document(*, stack: str, machine: str, commit: str, measures: Sequence[Measure]) -> dict[str, Any]:
    return {
        "stack": stack,
        "machine": machine,
        "commit": commit,
        "measures": {m.name: m.as_json() for m in measures},
    }


def results_write(document: dict[str, Any], *, directory: Path, date: str) -> Path:
    """bench/results/<date>-<stack>.json; a second run on the same day replaces the first."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{date}-{document['stack']}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path
