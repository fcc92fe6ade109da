"""Thin Celery entry points: they take ids and call the services; safe to run twice."""

from __future__ import annotations

from celery import shared_task

from agents.evaluation.runs import EVALUATE, eval_run_execute
from agents.idempotency import idempotency_keys_purge
from agents.rollout import canary_guards_evaluate
from agents.rollups import steps_rollup
from agents.runtime import run_advance, runs_recover
from approvals.decisions import approvals_sweep
from config.doorbell import ADVANCE_RUN, RESUME_RUN


@shared_task(name=ADVANCE_RUN)  # type: ignore[untyped-decorator]  # celery ships no types
def advance_run(run_id: int) -> None:
    run_advance(run_id=run_id)


@shared_task(name=RESUME_RUN)  # type: ignore[untyped-decorator]  # celery ships no types
def resume_run(run_id: int) -> None:
    # Same work as advance_run, routed to the "resumes" queue that workers drain first.
    run_advance(run_id=run_id)


@shared_task(name="agents.tasks.sweep")  # type: ignore[untyped-decorator]  # celery ships no types
def sweep() -> dict[str, int]:
    return {**runs_recover(), **approvals_sweep(), **idempotency_keys_purge(), **canary_guards_evaluate()}


@shared_task(name="agents.tasks.rollup")  # type: ignore[untyped-decorator]  # celery ships no types
def rollup() -> dict[str, int]:
    # One writer of the roll-ups: the watermark row's lock makes a second copy wait, then find nothing to do.
    return steps_rollup()


@shared_task(name=EVALUATE)  # type: ignore[untyped-decorator]  # celery ships no types
def evaluate(eval_run_id: int) -> None:
    # Queued -> running is a conditional UPDATE: a second delivery finds it taken and returns.
    eval_run_execute(eval_run_id=eval_run_id)
