"""The run runtime: the only writer of runs, their steps and the tool-call ledger.

``lifecycle`` starts, cancels and ends runs; ``lease`` admits one worker per run; ``loop``
reasons and acts step by step; ``proposals`` takes each proposed action through the checkpoint;
``ledger`` executes approved calls exactly once; ``resume`` applies people's decisions;
``recovery`` rings again what was lost; ``status`` holds the one writer of each status.
"""

from __future__ import annotations

from agents.runtime.lease import Lease, LeaseLost, lease_take
from agents.runtime.lifecycle import (
    AgentDisabled,
    RunInputInvalid,
    RunNotCancellable,
    enqueue_advance,
    run_cancel,
    run_create,
    run_input_errors,
    runs_stop_for_agent,
)
from agents.runtime.loop import run_advance
from agents.runtime.recovery import runs_recover

__all__ = [
    "AgentDisabled",
    "Lease",
    "LeaseLost",
    "RunInputInvalid",
    "RunNotCancellable",
    "enqueue_advance",
    "lease_take",
    "run_advance",
    "run_cancel",
    "run_create",
    "run_input_errors",
    "runs_recover",
    "runs_stop_for_agent",
]
