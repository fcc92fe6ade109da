"""Evaluation runs: created by an operator, executed by a task or the ``eval`` command.

``eval_run_move`` is the one writer of ``EvalRun.status`` (``EVAL_MOVES``). Executing takes the
run from queued to running with a conditional UPDATE, so a task delivered twice evaluates once.
Cases write only evaluation rows (``EvalCaseResult``): nothing goes through the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.eval_models import EVAL_MOVES, Dataset, DatasetCase, EvalCaseResult, EvalRun, EvalStatus
from agents.evaluation.engine import CaseTrace, case_run
from agents.evaluation.matchers import calls_score, outcome_mismatch
from agents.evaluation.metrics import aggregates
from agents.models import Agent, AgentVersion
from agents.reasoners import reasoner_for
from agents.versions import behaviour_of
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser
from config.doorbell import ring
from config.errors import DomainError

EVALUATE = "agents.tasks.evaluate"

Progress = Callable[[EvalCaseResult], None]


def eval_run_move(*, eval_run_id: int, to: EvalStatus, **fields: Any) -> bool:
    """Move the evaluation to ``to`` from any status allowed to reach it. Returns whether it moved."""
    sources = [source for source, targets in EVAL_MOVES.items() if to in targets]
    return EvalRun.objects.filter(pk=eval_run_id, status__in=sources).update(status=to, **fields) == 1


def eval_run_create(
    *, agent: Agent, dataset: Dataset, user: AnyUser | None, version_number: int | None = None, enqueue: bool = True
) -> EvalRun:
    """A queued evaluation of ``agent`` (or its version ``version_number``) on ``dataset``; with
    ``enqueue`` a task runs it once the transaction commits."""
    if dataset.agent_id != agent.pk:
        raise DomainError(
            f"Dataset {dataset.name!r} belongs to another agent.", details={"dataset": ["not this agent's"]}
        )
    version = version_find(agent=agent, version_number=version_number)
    with audited_atomic():
        eval_run = EvalRun.objects.create(
            agent=agent,
            dataset=dataset,
            version=version,
            version_number=version_number,
            started_by=user if user is not None and user.is_authenticated else None,
            cases_total=dataset.cases.count(),
        )
        audit_record(
            actor=user,
            action="agents.eval.created",
            target=eval_run,
            data={"dataset": dataset.name, "version": version_number, "cases": eval_run.cases_total},
        )
        if enqueue:
            ring(EVALUATE, eval_run.pk)
    return eval_run


def version_find(*, agent: Agent, version_number: int | None) -> AgentVersion | None:
    """The agent's version ``version_number``; None for the agent as it is now."""
    if version_number is None:
        return None
    version = AgentVersion.objects.filter(agent=agent, number=version_number).select_related("agent").first()
    if version is None:
        raise DomainError(
            f"{agent.slug} has no version {version_number}.", details={"version": [f"unknown version {version_number}"]}
        )
    return version


def behaviour_for(eval_run: EvalRun) -> Agent:
    """The agent to evaluate: as it is now, or an unsaved agent with its version's behaviour."""
    if eval_run.version is None:
        return eval_run.agent
    return behaviour_of(eval_run.version)


def eval_run_execute(*, eval_run_id: int, progress: Progress | None = None) -> EvalRun | None:
    """Evaluate every case of the run's dataset; returns the finished run, or None when another
    worker took it (or it is no longer queued)."""
    if not eval_run_move(eval_run_id=eval_run_id, to=EvalStatus.RUNNING, started_at=timezone.now()):
        return None
    eval_run = EvalRun.objects.select_related("agent", "dataset", "started_by", "version__agent").get(pk=eval_run_id)
    try:
        agent = behaviour_for(eval_run)
        reasoner = reasoner_for(agent)
        for case in DatasetCase.objects.filter(dataset=eval_run.dataset).order_by("id"):
            trace = case_run(agent=agent, reasoner=reasoner, case_input=case.input, starter=eval_run.started_by)
            result = _result_save(eval_run, case, trace)
            if progress is not None:
                progress(result)
    except Exception as exc:
        eval_run_move(
            eval_run_id=eval_run.pk,
            to=EvalStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now(),
        )
        raise
    summary = aggregates(EvalCaseResult.objects.filter(eval_run=eval_run))
    with audited_atomic():
        eval_run_move(eval_run_id=eval_run.pk, to=EvalStatus.SUCCEEDED, aggregates=summary, finished_at=timezone.now())
        audit_record(actor=eval_run.started_by, action="agents.eval.finished", target=eval_run, data=summary)
    eval_run.refresh_from_db()
    return eval_run


def _result_save(eval_run: EvalRun, case: DatasetCase, trace: CaseTrace) -> EvalCaseResult:
    score = calls_score(case.expected_calls, trace.proposals)
    reasons = list(score.reasons)
    outcome = outcome_mismatch(case.expected_outcome, outcome=trace.outcome, answer=trace.answer)
    if outcome:
        reasons.append(outcome + (f" ({trace.error})" if trace.error else ""))
    with transaction.atomic():
        result = EvalCaseResult.objects.create(
            eval_run=eval_run,
            case=case,
            passed=not reasons,
            reason="; ".join(reasons),
            outcome=trace.outcome,
            answer=trace.answer,
            proposals=trace.proposals,
            matched=score.matched,
            expected=score.expected,
            unexpected=score.unexpected,
            steps=trace.steps,
            prompt_tokens=trace.prompt_tokens,
            completion_tokens=trace.completion_tokens,
            cost=trace.cost,
            latency_ms=trace.latency_ms,
        )
        EvalRun.objects.filter(pk=eval_run.pk).update(cases_done=eval_run.results.count())
    return result
