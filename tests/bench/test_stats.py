from __future__ import annotations

import json
from pathlib import Path

from bench.stats import Goal, Measure, percentile, results_document, results_write, table


def test_percentile_interpolates_between_ranks() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == 50.5
    assert percentile(samples, 99) == 99.01
    assert percentile([7.0], 95) == 7.0


def test_measure_against_floor_and_goals() -> None:
    measure = Measure(name="x_ms", unit="ms", samples=[2.0, 4.0, 6.0], floor=2.0, goals=[Goal("p50", 5)])
    assert measure.ratio == 2.0
    assert measure.met() is True
    measure.goals.append(Goal("max", 5))
    assert measure.met() is False


def test_rate_has_one_value_and_counts_its_items() -> None:
    rate = Measure.rate("runs_per_s", count=200, seconds=4.0, goals=[Goal("p50", 60, at_most=False)])
    assert rate.value("p50") == rate.value("max") == 50.0
    assert rate.count == 200
    assert rate.met() is False


def test_missing_measure_is_not_available_in_the_table_and_the_json(tmp_path: Path) -> None:
    missing = Measure.missing("audit_seal_lag_ms", unit="ms", note="no audit.sealer", goals=[Goal("p99", 2000)])
    present = Measure(name="step_overhead_ms", unit="ms", samples=[1.0, 2.0], floor=0.5, goals=[Goal("p50", 3)])
    printed = table([present, missing])
    assert "audit_seal_lag_ms" in printed and "not available" in printed
    assert "4.0x" not in printed and "3.0x" in printed  # p50 1.5 over the floor 0.5

    document = results_document(stack="embedded", machine="m", commit="abc", measures=[present, missing])
    path = results_write(document, directory=tmp_path, date="2026-12-01")
    assert path.name == "2026-12-01-embedded.json"
    stored = json.loads(path.read_text())
    assert set(stored) == {"stack", "machine", "commit", "measures"}
    step = stored["measures"]["step_overhead_ms"]
    assert {"p50", "p95", "p99", "max", "n", "unit", "floor", "ratio", "goal"} <= set(step)
    assert step["n"] == 2 and step["floor"] == 0.5 and step["ratio"] == 3.0 and step["met"] is True
    assert stored["measures"]["audit_seal_lag_ms"]["p50"] is None
    assert stored["measures"]["audit_seal_lag_ms"]["note"] == "no audit.sealer"
