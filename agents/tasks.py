"""Thin Celery entry points: they take ids and call the services; safe to run twice."""

from __future__ import annotations

from celery import shared_task

from agents import services


@shared_task(name="agents.tasks.advance_run")
def advance_run(run_id: int) -> None:
    services.run_advance(run_id=run_id)


@shared_task(name="agents.tasks.resume_run")
def resume_run(run_id: int) -> None:
    # Same work as advance_run, routed to the "resumes" queue that workers drain first.
    services.run_advance(run_id=run_id)


@shared_task(name="agents.tasks.sweep")
def sweep() -> dict[str, int]:
    from approvals.services import approvals_sweep

    return {**services.runs_recover(), **approvals_sweep()}
