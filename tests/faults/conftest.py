"""Fixtures of the fault suite: a harness per scenario, a stack (private Redis) per scenario, and
the summary line at the end of the session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.harness import SEED, TALLY, Harness
from tests.faults.stack import FAULTS_DIR, PrivateRedis, Stack


@pytest.fixture
def harness(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Harness]:
    """The scenario's ledger of acknowledged actions, its seeded randomness and its check.
    Requests ``transactional_db``: the servers and workers are other processes."""
    scenario = Harness(request.node.name)
    print(f"\n[{scenario.name}] FAULTS_SEED={SEED}")
    try:
        yield scenario
    finally:
        scenario.finish()


@pytest.fixture
def stack(harness: Harness) -> Iterator[Stack]:
    """A private Redis for the scenario and the Stack its processes are made from; everything
    it started is stopped before the test database is flushed."""
    name = harness.name.removeprefix("test_")[:28]
    shutil.rmtree(FAULTS_DIR / name, ignore_errors=True)
    redis = PrivateRedis(FAULTS_DIR / name)
    redis.start()
    made = Stack(name, redis_url=redis.url)
    made.private_redis = redis
    try:
        yield made
    finally:
        made.stop_all()
        redis.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.durations:
        line = TALLY.summary()
        terminalreporter.write_line(line)
        FAULTS_DIR.mkdir(parents=True, exist_ok=True)
        (FAULTS_DIR / "summary.txt").write_text(line + "\n" + "\n".join(TALLY.notes) + "\n")
        for note in TALLY.notes:
            terminalreporter.write_line(f"faults: {note}")
