"""The run loop: take the lease, apply decisions, then reason, check and act step by step.

The database is the truth and the broker only a doorbell: a task carries a run id, takes a
lease with a conditional UPDATE, and each step boundary is its own transaction, so a task
delivered twice, or a worker killed mid-step, never runs a side effect twice.
"""

from __future__ import annotations

import logging
import time

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from agents.models import Agent, GuardrailHitRecord, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.reasoners import Action, ReasonerError, reasoner_for
from agents.runtime.lease import Lease, LeaseKeeper, LeaseLost, hold, lease_take, requeue
from agents.runtime.ledger import CallResult, final_answer_release, read_result_write, tool_call_execute
from agents.runtime.lifecycle import run_finish
from agents.runtime.proposals import final_answer_hold, propose, wait_for_the_rest
from agents.runtime.resume import decisions_apply
from agents.runtime.steps import Trace, guardrail_hits_record, reasoning_step
from agents.tools import FINAL_ANSWER
from agents.versions import behaviour_for_run
from approvals.guardrails import GuardrailEffect, check_final
from audit.redaction import Redactor
from audit.services import audit_record, audited_atomic

logger = logging.getLogger(__name__)

MAX_INVALID_PROPOSALS = 3
OPEN_CALL_STATUSES = [ToolCallStatus.APPROVED, ToolCallStatus.EXECUTING, ToolCallStatus.AWAITING]


def run_advance(*, run_id: int) -> None:
    lease = lease_take(run_id)
    if lease is None:
        return  # a redelivered copy, or a run that is waiting or finished: nothing to do
    run = Run.objects.select_related("agent", "started_by", "version").get(pk=run_id)
    # The one place the run's behaviour is chosen: its version's, on the live row (kill switch).
    run.agent = behaviour_for_run(run)
    with audited_atomic():
        if run.started_at is None:
            run.started_at = timezone.now()
            Run.objects.filter(pk=run.pk, started_at__isnull=True).update(started_at=run.started_at)
            audit_record(actor=run.agent, action="agents.run.started", target=run)
        else:
            audit_record(actor=run.agent, action="agents.run.resumed", target=run)
    started = time.monotonic()
    try:
        with LeaseKeeper(lease) as keeper:
            if decisions_apply(run, lease=lease):
                _loop(run, lease, started, keeper)
    except LeaseLost:
        logger.info("run %s: lease lost to another worker; stopping here", run_id)
    except SoftTimeLimitExceeded:
        # The slice check in the loop normally ends the task long before this; a tool that ran
        # past the soft limit is left "executing" and reconciled by the next worker.
        logger.warning("run %s: task time limit reached; handing the run back to the queue", run_id)
        requeue(run, lease)
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        with audited_atomic():
            locked = Run.objects.select_for_update(no_key=True).get(pk=run_id)
            if not locked.is_terminal and locked.lease_owner == lease.token:
                run_finish(locked, RunStatus.FAILED, error=f"Internal error: {type(exc).__name__}: {exc}")
    finally:
        elapsed_ms = int((time.monotonic() - started) * 1000)
        Run.objects.filter(pk=run_id).update(active_ms=F("active_ms") + elapsed_ms)


def _loop(run: Run, lease: Lease, started: float, keeper: LeaseKeeper) -> None:
    agent = run.agent
    reasoner = reasoner_for(agent)
    invalid = 0
    progressed = False
    reasoning_steps: int | None = None
    trace = Trace(run)
    # The last call's result when it is a read's, not written yet: it is written with the next
    # proposal (one transaction a step), or on its own before anything else the loop does.
    result: CallResult | None = None
    try:
        while True:
            # The run, its agent's kill switch and whether any call is not ended yet (but the one
            # whose result waits), in one query.
            has_open = _run_reload(run, agent, result=result)
            if run.status != RunStatus.RUNNING or run.lease_owner != lease.token:
                _result_write(run, result)
                return  # cancelled, paused or taken over by another worker
            # The calls not ended yet: the next to run, and whether one waits for a person.
            open_calls = list(run.tool_calls.filter(status__in=OPEN_CALL_STATUSES).order_by("step")) if has_open else []
            open_calls = [call for call in open_calls if result is None or call.pk != result.tool_call.pk]
            pending = next((call for call in open_calls if call.status != ToolCallStatus.AWAITING), None)
            awaiting = any(call.status == ToolCallStatus.AWAITING for call in open_calls)
            if reasoning_steps is None:
                # Counted once a task; only the lease holder adds reasoning steps, and this loop counts them.
                reasoning_steps = run.steps.filter(kind=Step.Kind.REASONING).count()
            stop = _stop_reason(
                run,
                agent,
                active_ms=run.active_ms + int((time.monotonic() - started) * 1000),
                reasoning_steps=reasoning_steps,
            )
            # A cancel or the kill switch stops everything; a budget stops new reasoning, not a call
            # (or final answer) a person already approved: that one runs, then the budget applies.
            sliced = progressed and time.monotonic() - started > settings.RUN_SLICE_SECONDS
            if result is not None and (stop or awaiting or pending is not None or keeper.lost or sliced):
                _result_write(run, result)  # the loop does not reason next: written on its own, first
                result = None
            if stop and not (pending is not None and stop[0] == RunStatus.FAILED):
                status, message = stop
                with audited_atomic():
                    locked = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
                    if locked.lease_owner == lease.token:
                        run_finish(locked, status, error=message)
                return
            if awaiting and wait_for_the_rest(run, lease=lease):
                return  # a call proposed with the decided ones still waits for a person
            # The keeper renews the lease in the background; the refresh above saw this worker hold
            # it, and every write checks again under the run's lock (hold).
            if keeper.lost:
                return  # another worker took the run over (our lease expired)
            if sliced:
                requeue(run, lease)  # a step boundary: let a fresh task go on, far from the time limit
                return
            progressed = True

            if pending is not None and pending.tool == FINAL_ANSWER:
                final_answer_release(run, pending, lease=lease)
                return
            if pending is not None:
                tool_call_execute(run=run, tool_call=pending, lease=lease, trace=trace)
                continue

            redactor = Redactor(run.redactions)
            view = trace.view(redactor)
            reasoning_steps += 1  # recorded below, whatever the reasoner answers
            try:
                action = reasoner.next_action(view)
            except ReasonerError as exc:
                with audited_atomic():
                    locked = hold(run, lease)
                    _result_write(run, result, atomic=False)
                    reasoning_step(run, Action(kind="invalid", error=str(exc)))
                    run_finish(locked, RunStatus.FAILED, error=str(exc))
                return
            action.prompt_tail = view.history[-2:]
            if redactor.mapping != run.redactions:
                Run.objects.filter(pk=run.pk).update(redactions=redactor.mapping)
                run.redactions = redactor.mapping

            if action.kind == "final":
                _complete(run, action, redactor, lease=lease, result=result)
                return
            cleared: list[ToolCall] = []
            outcome = propose(run, agent, action, redactor, lease=lease, cleared=cleared, trace=trace, result=result)
            result = None
            if outcome == "invalid":
                invalid += 1
                if invalid >= MAX_INVALID_PROPOSALS:
                    with audited_atomic():
                        run_finish(
                            hold(run, lease),
                            RunStatus.FAILED,
                            error=f"The reasoner proposed {invalid} invalid actions in a row.",
                        )
                    return
            else:
                invalid = 0
            if outcome == "waiting":
                return  # the task ends: no worker waits for a person
            if cleared:
                # The first call cleared by the policy runs at once, without a second look at the
                # run: its claim (here, or in the proposal's transaction) checked the step boundary
                # (lease, cancel, kill switch). The others go round the loop.
                first = cleared[0]
                claimed = first.status == ToolCallStatus.EXECUTING
                result = tool_call_execute(
                    run=run, tool_call=first, lease=lease, claimed=claimed, trace=trace, defer=True
                )

    except BaseException:
        # A read's result seen by nobody but this task: written before the error goes up (a
        # failed run must not keep a call "executing"); the write checks the call's status.
        if result is not None:
            try:
                _result_write(run, result)
            except Exception:
                logger.exception("run %s: the last read's result could not be written", run.pk)
        raise


def _result_write(run: Run, result: CallResult | None, *, atomic: bool = True) -> None:
    """A read's result not written yet, written now (in the caller's transaction if not ``atomic``)."""
    if result is None:
        return
    if not atomic:
        read_result_write(run, result)
        return
    with audited_atomic():
        read_result_write(run, result)


def _run_reload(run: Run, agent: Agent, *, result: CallResult | None = None) -> bool:
    """Read the run's columns and what it takes from its agent's live row (the kill switch; the
    rest of its behaviour is its version's) afresh; returns whether the run has calls not ended
    yet. The related objects stay: the agent's limit is set here, the starter never changes.

    Written out, not built by the ORM: it runs at every step, and building the query cost more
    than the database took to answer it."""
    quote = connection.ops.quote_name
    runs, agents, calls = (quote(model._meta.db_table) for model in (Run, Agent, ToolCall))
    statuses = ", ".join(["%s"] * len(OPEN_CALL_STATUSES))
    fresh = Run.objects.raw(
        f"SELECT r.*, a.enabled AS agent_enabled, EXISTS (SELECT 1 FROM {calls} c "  # noqa: S608 - the models' own tables
        f"WHERE c.run_id = r.id AND c.status IN ({statuses}) AND c.id <> %s) AS has_open "
        f"FROM {runs} r INNER JOIN {agents} a ON a.id = r.agent_id WHERE r.id = %s",
        [*(status.value for status in OPEN_CALL_STATUSES), result.tool_call.pk if result else 0, run.pk],
    )[0]
    for field in Run._meta.concrete_fields:
        setattr(run, field.attname, getattr(fresh, field.attname))
    agent.enabled = bool(getattr(fresh, "agent_enabled"))  # noqa: B009 - a column of the query, not a field
    return bool(getattr(fresh, "has_open"))  # noqa: B009


def _stop_reason(run: Run, agent: Agent, *, active_ms: int, reasoning_steps: int) -> tuple[RunStatus, str] | None:
    if run.cancel_requested:
        return RunStatus.CANCELLED, "Cancelled at the next step boundary."
    if not agent.enabled:
        return RunStatus.CANCELLED, "Agent disabled (kill switch)."
    if reasoning_steps >= agent.max_steps:
        return RunStatus.FAILED, f"Step budget exhausted ({agent.max_steps} steps)."
    if run.cost >= agent.max_cost:
        return RunStatus.FAILED, f"Cost budget exhausted ({run.cost} of {agent.max_cost})."
    if active_ms > agent.max_wall_seconds * 1000:
        return RunStatus.FAILED, f"Wall-time budget exhausted ({agent.max_wall_seconds} s)."
    return None


def _complete(
    run: Run, action: Action, redactor: Redactor, *, lease: Lease | None = None, result: CallResult | None = None
) -> None:
    answer = redactor.restore(action.answer)
    hits = check_final(answer)
    blocked = [hit for hit in hits if hit.effect == GuardrailEffect.BLOCK]
    with audited_atomic():
        locked = hold(run, lease)
        _result_write(run, result, atomic=False)  # the last step's read, first
        step = reasoning_step(run, action)
        if hits:
            Step.objects.filter(pk=step.pk).update(
                verdict=GuardrailEffect.BLOCK if blocked else GuardrailEffect.FLAG,
                verdict_reason="; ".join(f"guardrail {h.name}: {h.message}" for h in hits),
            )
            audit_record(
                actor=run.agent,
                action="agents.guardrail.hit",
                target=locked,
                data={"stage": "final", "hits": [h.as_dict() for h in hits]},
            )
            guardrail_hits_record(
                run,
                step=step.index,
                stage=GuardrailHitRecord.Stage.FINAL,
                tool=FINAL_ANSWER,
                hits=[h.as_dict() for h in hits],
            )
        if blocked:
            run_finish(locked, RunStatus.FAILED, error=f"The final answer was blocked by guardrail {blocked[0].name}.")
        elif hits:
            final_answer_hold(locked, step=step, answer=answer, rationale=action.rationale, hits=hits)
        else:
            run_finish(locked, RunStatus.SUCCEEDED, result=answer)
