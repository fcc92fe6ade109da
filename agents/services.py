"""The run loop and every write to runs, steps and the tool-call ledger.

The database is the truth and the broker only a doorbell: a task carries a run id, takes a
lease with a conditional UPDATE, and each step boundary is its own transaction, so a task
delivered twice, or a worker killed mid-step, never runs a side effect twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import jsonschema
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import Agent, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.reasoners import Action, ReasonerError, reasoner_for
from agents.reasoners.base import RunView, ToolSpec
from agents.tools import FINAL_ANSWER, Risk, ToolArgumentsInvalid, ToolContext, arguments_hash, registry
from audit.redaction import Redactor
from audit.services import audit_record, audited_atomic
from config.api import Conflict, DomainError

logger = logging.getLogger(__name__)

MAX_INVALID_PROPOSALS = 3


class AgentDisabled(Conflict):
    code = "agent_disabled"


class RunInputInvalid(DomainError):
    code = "invalid_input"


class RunNotCancellable(Conflict):
    code = "not_cancellable"


# --- Starting and stopping runs -----------------------------------------------------------


def run_input_errors(*, agent: Agent, payload: Any) -> dict[str, list[str]]:
    from approvals.guardrails import check_input

    if not isinstance(payload, dict):
        return {"input": ["must be a JSON object"]}
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    if size > settings.RUN_INPUT_MAX_BYTES:
        return {"input": [f"is {size} bytes; the limit is {settings.RUN_INPUT_MAX_BYTES}"]}
    errors: dict[str, list[str]] = {}
    if agent.input_schema:
        validator = jsonschema.Draft202012Validator(agent.input_schema)
        for error in sorted(validator.iter_errors(payload), key=lambda e: list(e.path)):
            field = ".".join(["input", *(str(p) for p in error.path)])
            errors.setdefault(field, []).append(error.message)
    for hit in check_input(payload):
        errors.setdefault("input", []).append(f"guardrail {hit.name}: {hit.message}")
    return errors


def run_create(*, agent: Agent, user: Any, payload: Any) -> Run:
    errors = run_input_errors(agent=agent, payload=payload)
    if errors:
        raise RunInputInvalid("The run input is invalid.", details={"errors": errors})
    redactor = Redactor()
    redactor.redact(payload)
    with audited_atomic():
        # Lock the agent row so a kill switch pulled at this moment either wins or sees this run.
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        if not agent.enabled:
            raise AgentDisabled(f"Agent {agent.slug} is disabled (kill switch); no new runs are accepted.")
        run = Run.objects.create(
            agent=agent,
            started_by=user if getattr(user, "is_authenticated", False) else None,
            input=payload,
            redactions=redactor.mapping,
            enqueued_at=timezone.now(),
        )
        audit_record(actor=user, action="agents.run.created", target=run, data={"input": payload})
        enqueue_advance(run.pk)
    return run


def enqueue_advance(run_id: int, *, resume: bool = False) -> None:
    """Ring the doorbell once the transaction that made the run runnable has committed."""
    from agents.tasks import advance_run, resume_run

    task = resume_run if resume else advance_run
    # After commit, so the worker never looks for a row it cannot see yet.
    transaction.on_commit(lambda: task.delay(run_id))


def run_cancel(*, run: Run, user: Any, reason: str = "") -> Run:
    from approvals.services import approval_requests_cancel_for_run

    with audited_atomic():
        run = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
        if run.is_terminal:
            raise RunNotCancellable(f"Run {run.pk} already ended ({run.status}).")
        if run.status in (RunStatus.QUEUED, RunStatus.WAITING):
            # Nothing is executing: stop it here rather than at the next step boundary.
            _finish(
                run,
                RunStatus.CANCELLED,
                error=f"Cancelled by {_name(user)}" + (f": {reason}" if reason else ""),
                actor=user,
            )
            approval_requests_cancel_for_run(run=run, reason="run cancelled")
        else:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
            audit_record(actor=user, action="agents.run.cancel_requested", target=run, data={"reason": reason})
    return run


def agent_set_enabled(*, agent: Agent, enabled: bool, user: Any, reason: str) -> Agent:
    with audited_atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        if agent.enabled == enabled:
            return agent
        agent.enabled = enabled
        agent.save(update_fields=["enabled", "updated_at"])
        audit_record(
            actor=user,
            action="agents.agent.kill_switch",
            target=agent,
            data={"old": not enabled, "new": enabled, "reason": reason},
        )
        if not enabled:
            agent_runs_stop(agent=agent, user=user)
    return agent


def agent_runs_stop(*, agent: Agent, user: Any) -> None:
    """Inside the kill switch's transaction: waiting and queued runs stop now, their pending
    approvals are cancelled; running ones stop at their next step boundary."""
    from approvals.services import approval_requests_cancel_for_run

    for run in Run.objects.select_for_update(no_key=True).filter(
        agent=agent, status__in=[RunStatus.QUEUED, RunStatus.WAITING]
    ):
        _finish(run, RunStatus.CANCELLED, error="Agent disabled (kill switch)", actor=user)
        approval_requests_cancel_for_run(run=run, reason="agent disabled")


def agents_emergency_stop(*, user: Any, reason: str) -> int:
    stopped = 0
    for agent in Agent.objects.filter(enabled=True):
        agent_set_enabled(agent=agent, enabled=False, user=user, reason=f"emergency stop: {reason}")
        stopped += 1
    return stopped


def agent_set_level(*, agent: Agent, level: int, user: Any, reason: str, tool: str | None = None) -> Agent:
    from django.core.exceptions import ValidationError

    with audited_atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        old = agent.level_for(tool) if tool else agent.autonomy_level
        if old == level:
            return agent
        if tool:
            agent.tool_levels = {**agent.tool_levels, tool: level}
        else:
            agent.autonomy_level = level
        try:
            agent.full_clean()
        except ValidationError as exc:
            raise DomainError("This autonomy level is not allowed.", details={"errors": exc.message_dict}) from None
        agent.save(update_fields=["autonomy_level", "tool_levels", "updated_at"])
        audit_record(
            actor=user,
            action="agents.agent.level_changed",
            target=agent,
            data={"tool": tool, "old": old, "new": level, "reason": reason},
        )
    return agent


# --- The loop ------------------------------------------------------------------------------


class LeaseLost(Exception):
    """Another worker holds the run now: this one stops without writing anything."""


@dataclass
class Lease:
    run_id: int
    token: str

    def renew(self) -> bool:
        until = timezone.now() + timedelta(seconds=settings.RUN_LEASE_SECONDS)
        return Run.objects.filter(pk=self.run_id, lease_owner=self.token).update(lease_expires_at=until) == 1


class LeaseKeeper:
    """Renews the lease in the background while a worker thinks or runs a tool, so a long
    model call or tool does not let the sweeper hand a live run to a second worker."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{lease.run_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        interval = max(settings.RUN_LEASE_SECONDS / 3, 0.05)
        try:
            while not self._stop.wait(interval):
                try:
                    renewed = self.lease.renew()
                except Exception:  # noqa: BLE001 - a dropped connection: reconnect and go on
                    logger.warning("run %s: lease renewal failed; retrying", self.lease.run_id, exc_info=True)
                    connection.close()
                    continue
                if not renewed:
                    self.lost = True
                    return
        finally:
            connection.close()  # this thread's own connection


def lease_take(run_id: int) -> Lease | None:
    """Claim the run with one conditional UPDATE; None when another worker holds it or it is not runnable."""
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        Run.objects.filter(pk=run_id, status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .update(
            status=RunStatus.RUNNING,
            lease_owner=token,
            lease_expires_at=now + timedelta(seconds=settings.RUN_LEASE_SECONDS),
        )
    )
    return Lease(run_id, token) if claimed else None


def _hold(run: Run, lease: Lease | None) -> Run:
    """Inside an audited transaction: lock the run and check this worker still holds its lease.

    Every write of the loop starts here, so a worker whose lease ran out (and whose run
    another worker took over) rolls back instead of proposing or finishing a second time.
    """
    locked = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
    if lease is not None and (locked.lease_owner != lease.token or locked.status != RunStatus.RUNNING):
        raise LeaseLost(f"run {run.pk} is no longer held by this worker")
    return locked


def _requeue(run: Run, lease: Lease) -> None:
    """Give the run back to the queue: the task ends well before its time limit, another picks up."""
    with audited_atomic():
        released = Run.objects.filter(pk=run.pk, lease_owner=lease.token, status=RunStatus.RUNNING).update(
            status=RunStatus.QUEUED, lease_owner="", lease_expires_at=None, enqueued_at=timezone.now()
        )
        if released:
            enqueue_advance(run.pk)


def run_advance(*, run_id: int) -> None:
    lease = lease_take(run_id)
    if lease is None:
        return  # a redelivered copy, or a run that is waiting or finished: nothing to do
    run = Run.objects.select_related("agent", "started_by").get(pk=run_id)
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
            _loop(run, lease, started, keeper)
    except LeaseLost:
        logger.info("run %s: lease lost to another worker; stopping here", run_id)
    except SoftTimeLimitExceeded:
        # The slice check in the loop normally ends the task long before this; a tool that ran
        # past the soft limit is left "executing" and reconciled by the next worker.
        logger.warning("run %s: task time limit reached; handing the run back to the queue", run_id)
        _requeue(run, lease)
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        with audited_atomic():
            locked = Run.objects.select_for_update(no_key=True).get(pk=run_id)
            if not locked.is_terminal and locked.lease_owner == lease.token:
                _finish(locked, RunStatus.FAILED, error=f"Internal error: {type(exc).__name__}: {exc}")
    finally:
        elapsed_ms = int((time.monotonic() - started) * 1000)
        Run.objects.filter(pk=run_id).update(active_ms=F("active_ms") + elapsed_ms)


def _loop(run: Run, lease: Lease, started: float, keeper: LeaseKeeper) -> None:
    agent = run.agent
    reasoner = reasoner_for(agent)
    invalid = 0
    progressed = False
    while True:
        run.refresh_from_db()
        if run.status != RunStatus.RUNNING or run.lease_owner != lease.token:
            return  # cancelled, paused or taken over by another worker
        agent.refresh_from_db(
            fields=[
                "enabled",
                "autonomy_level",
                "tool_levels",
                "max_steps",
                "max_cost",
                "max_wall_seconds",
                "on_reject",
            ]
        )
        pending = (
            run.tool_calls.filter(status__in=[ToolCallStatus.APPROVED, ToolCallStatus.EXECUTING])
            .order_by("step")
            .first()
        )
        stop = _stop_reason(run, agent, active_ms=run.active_ms + int((time.monotonic() - started) * 1000))
        # A cancel or the kill switch stops everything; a budget stops new reasoning, not a call
        # (or final answer) a person already approved: that one runs, then the budget applies.
        if stop and not (pending is not None and stop[0] == RunStatus.FAILED):
            status, message = stop
            with audited_atomic():
                locked = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
                if locked.lease_owner == lease.token and not locked.is_terminal:
                    _finish(locked, status, error=message)
            return
        if keeper.lost or not lease.renew():
            return  # another worker took the run over (our lease expired)
        if progressed and time.monotonic() - started > settings.RUN_SLICE_SECONDS:
            _requeue(run, lease)  # a step boundary: let a fresh task go on, far from the time limit
            return
        progressed = True

        if pending is not None and pending.tool == FINAL_ANSWER:
            _final_answer_release(run, pending, lease=lease)
            return
        if pending is not None:
            tool_call_execute(run=run, tool_call=pending)
            continue

        redactor = Redactor(run.redactions)
        view = run_view(run, redactor)
        try:
            action = reasoner.next_action(view)
        except ReasonerError as exc:
            with audited_atomic():
                locked = _hold(run, lease)
                _reasoning_step(run, Action(kind="invalid", error=str(exc)))
                _finish(locked, RunStatus.FAILED, error=str(exc))
            return
        action.prompt_tail = view.history[-2:]
        if redactor.mapping != run.redactions:
            Run.objects.filter(pk=run.pk).update(redactions=redactor.mapping)
            run.redactions = redactor.mapping

        if action.kind == "final":
            _complete(run, action, redactor, lease=lease)
            return
        outcome = _propose(run, agent, action, redactor, lease=lease)
        if outcome == "invalid":
            invalid += 1
            if invalid >= MAX_INVALID_PROPOSALS:
                with audited_atomic():
                    _finish(
                        _hold(run, lease),
                        RunStatus.FAILED,
                        error=f"The reasoner proposed {invalid} invalid actions in a row.",
                    )
                return
        else:
            invalid = 0
        if outcome == "waiting":
            return  # the task ends: no worker waits for a person


def _stop_reason(run: Run, agent: Agent, *, active_ms: int) -> tuple[str, str] | None:
    if run.cancel_requested:
        return RunStatus.CANCELLED, "Cancelled at the next step boundary."
    if not agent.enabled:
        return RunStatus.CANCELLED, "Agent disabled (kill switch)."
    reasoning_steps = run.steps.filter(kind=Step.Kind.REASONING).count()
    if reasoning_steps >= agent.max_steps:
        return RunStatus.FAILED, f"Step budget exhausted ({agent.max_steps} steps)."
    if run.cost >= agent.max_cost:
        return RunStatus.FAILED, f"Cost budget exhausted ({run.cost} of {agent.max_cost})."
    if active_ms > agent.max_wall_seconds * 1000:
        return RunStatus.FAILED, f"Wall-time budget exhausted ({agent.max_wall_seconds} s)."
    return None


def run_view(run: Run, redactor: Redactor) -> RunView:
    """What the reasoner may see: the run's history with PII and secrets replaced by placeholders."""
    agent = run.agent
    history: list[dict[str, Any]] = []
    for step in run.steps.order_by("index"):
        data = step.input or {}
        if step.kind == Step.Kind.TOOL_CALL:
            history.append(
                {
                    "type": "tool_call",
                    "id": f"call_{step.index}",
                    "tool": data.get("tool", ""),
                    "arguments": data.get("arguments"),
                    "rationale": data.get("rationale", ""),
                    "playbook_step": data.get("playbook_step", ""),
                }
            )
        elif step.kind in (Step.Kind.OBSERVATION, Step.Kind.DECISION) and data.get("call_step"):
            history.append(
                {
                    "type": "observation",
                    "call_id": f"call_{data['call_step']}",
                    "tool": data.get("tool", ""),
                    "status": data.get("status", ""),
                    "output": step.output,
                    "error": step.error,
                    "comment": data.get("comment", ""),
                }
            )
    tools = [
        ToolSpec(name, registry[name].description, registry[name].input_schema())
        for name in agent.tools
        if name in registry
    ]
    return RunView(
        objective=agent.objective,
        scope=agent.scope,
        system_prompt=agent.system_prompt,
        input=redactor.redact(run.input),
        history=redactor.redact(history),
        tools=tools,
        playbook=agent.playbook,
    )


def _record_step(
    run: Run,
    kind: str,
    *,
    input: dict | None = None,
    output: Any = None,
    error: str = "",
    verdict: str = "",
    verdict_reason: str = "",
    latency_ms: int = 0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost: Decimal | int = 0,
) -> Step:
    # The UPDATE holds the run's row lock until the caller's transaction ends, so two writers
    # (the loop and a decision) queue here and never take the same index.
    Run.objects.filter(pk=run.pk).update(step_count=F("step_count") + 1, cost=F("cost") + Decimal(cost))
    run.refresh_from_db(fields=["step_count", "cost"])
    return Step.objects.create(
        run=run,
        index=run.step_count,
        kind=kind,
        input=input or {},
        output=output,
        error=error,
        verdict=verdict,
        verdict_reason=verdict_reason,
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=Decimal(cost),
    )


def _reasoning_step(run: Run, action: Action) -> Step:
    audit_record(
        actor=run.agent,
        action="agents.step.reasoning",
        target=run,
        data={
            "prompt_tail": action.prompt_tail,
            "reply": action.transcript,
            "proposal": action.kind,
            "tool": action.tool,
            "rationale": action.rationale,
            "error": action.error,
            "tokens": [action.prompt_tokens, action.completion_tokens],
        },
    )
    return _record_step(
        run,
        Step.Kind.REASONING,
        input={
            "proposal": action.kind,
            "tool": action.tool,
            "rationale": action.rationale,
            "transcript": action.transcript,
        },
        output={"answer": action.answer} if action.kind == "final" else None,
        error=action.error,
        latency_ms=action.latency_ms,
        prompt_tokens=action.prompt_tokens,
        completion_tokens=action.completion_tokens,
        cost=action.cost,
    )


def _complete(run: Run, action: Action, redactor: Redactor, *, lease: Lease | None = None) -> None:
    from approvals.guardrails import check_final

    answer = redactor.restore(action.answer)
    hits = check_final(answer)
    blocked = [hit for hit in hits if hit.effect == "block"]
    with audited_atomic():
        locked = _hold(run, lease)
        step = _reasoning_step(run, action)
        if hits:
            Step.objects.filter(pk=step.pk).update(
                verdict="block" if blocked else "flag",
                verdict_reason="; ".join(f"guardrail {h.name}: {h.message}" for h in hits),
            )
            audit_record(
                actor=run.agent,
                action="agents.guardrail.hit",
                target=locked,
                data={"stage": "final", "hits": [h.as_dict() for h in hits]},
            )
        if blocked:
            _finish(locked, RunStatus.FAILED, error=f"The final answer was blocked by guardrail {blocked[0].name}.")
        elif hits:
            _final_answer_hold(locked, step=step, answer=answer, rationale=action.rationale, hits=hits)
        else:
            _finish(locked, RunStatus.SUCCEEDED, result=answer)


def _final_answer_hold(run: Run, *, step: Step, answer: Any, rationale: str, hits: list[Any]) -> None:
    """A flagged final answer waits for a person, as a flagged action does at every level:
    approved, it becomes the run's result; rejected, the run ends."""
    from approvals.policy import CheckpointVerdict

    reason = f"the final answer was flagged by guardrail {hits[0].name}: {hits[0].message}"
    arguments = {"answer": answer}
    tool_call = ToolCall.objects.create(
        run=run,
        step=step.index,
        tool=FINAL_ANSWER,
        arguments=arguments,
        arguments_hash=arguments_hash(arguments),
        rationale=rationale,
        verdict="require_approval",
        verdict_reason=reason,
        status=ToolCallStatus.AWAITING,
    )
    verdict = CheckpointVerdict(
        "require_approval", reason, level=run.agent.autonomy_level, guardrails=[h.as_dict() for h in hits]
    )
    _pause(run, tool_call=tool_call, verdict=verdict, risk_class=Risk.WRITE_IRREVERSIBLE)


def _pause(run: Run, *, tool_call: ToolCall, verdict: Any, risk_class: str) -> None:
    """Inside the locked run's transaction: the run waits for a person and lets go of its lease;
    the approval request is made and pushed on commit. The task then ends."""
    from approvals.services import approval_request_create

    run.status = RunStatus.WAITING
    run.lease_owner = ""
    run.lease_expires_at = None
    run.save(update_fields=["status", "lease_owner", "lease_expires_at"])
    approval_request_create(run=run, tool_call=tool_call, verdict=verdict, risk_class=risk_class)
    audit_record(
        actor=run.agent, action="agents.run.paused", target=run, data={"tool": tool_call.tool, "reason": verdict.reason}
    )


def _final_answer_release(run: Run, tool_call: ToolCall, *, lease: Lease) -> None:
    """A person approved the flagged final answer: exactly that answer becomes the result."""
    with audited_atomic():
        locked = _hold(run, lease)
        claimed = ToolCall.objects.filter(pk=tool_call.pk, status=ToolCallStatus.APPROVED).update(
            status=ToolCallStatus.SUCCEEDED, output=tool_call.arguments
        )
        if not claimed:
            return
        if arguments_hash(tool_call.arguments) != tool_call.approved_hash:
            # Fail closed, as for any approved call.
            ToolCall.objects.filter(pk=tool_call.pk).update(status=ToolCallStatus.FAILED)
            _finish(locked, RunStatus.FAILED, error="Refused: the answer differs from the approved answer.")
            return
        _finish(locked, RunStatus.SUCCEEDED, result=tool_call.arguments["answer"])


def _propose(run: Run, agent: Agent, action: Action, redactor: Redactor, *, lease: Lease | None = None) -> str:
    """Validate the proposed call, ask the policy, and record it. Returns what happened."""
    from approvals.policy import RunContext, checkpoint_verdict
    from approvals.services import approval_request_create

    tool = registry.get(action.tool)
    arguments = redactor.restore(action.arguments)
    problem = ""
    if action.kind == "invalid":
        problem = action.error or "The reasoner's output could not be understood."
    elif tool is None:
        problem = f"Unknown tool {action.tool!r}. Available: {', '.join(agent.tools)}."
    elif action.tool not in agent.tools:
        problem = f"{action.tool} is not one of this agent's tools. Available: {', '.join(agent.tools)}."
    else:
        try:
            arguments = tool.validate_arguments(arguments)
        except ToolArgumentsInvalid as exc:
            problem = f"Arguments for {action.tool} are invalid: {json.dumps(exc.errors)}"

    with audited_atomic():
        locked = _hold(run, lease)
        _reasoning_step(run, action)
        proposal = {
            "tool": action.tool,
            "arguments": action.arguments if problem else arguments,
            "rationale": action.rationale,
            **action.transcript,
        }
        if problem:
            call_step = _record_step(
                run, Step.Kind.TOOL_CALL, input=proposal, verdict="invalid", verdict_reason=problem
            )
            _record_step(
                run,
                Step.Kind.OBSERVATION,
                error=problem,
                input={"call_step": call_step.index, "tool": action.tool, "status": "invalid"},
            )
            audit_record(
                actor=agent,
                action="agents.tool_call.refused",
                target=run,
                data={"tool": action.tool, "arguments": action.arguments, "reason": problem},
            )
            return "invalid"

        assert tool is not None
        verdict = checkpoint_verdict(
            agent=agent, tool=tool, arguments=arguments, context=RunContext(starter=run.started_by, run_id=run.pk)
        )
        call_step = _record_step(
            run,
            Step.Kind.TOOL_CALL,
            input={**proposal, "policy": verdict.as_dict()},
            verdict=verdict.verdict,
            verdict_reason=verdict.reason,
        )
        digest = arguments_hash(arguments)
        tool_call = ToolCall.objects.create(
            run=run,
            step=call_step.index,
            tool=tool.name,
            arguments=arguments,
            arguments_hash=digest,
            rationale=action.rationale,
            verdict=verdict.verdict,
            verdict_reason=verdict.reason,
        )
        audit_record(
            actor=agent,
            action="agents.tool_call.proposed",
            target=run,
            data={"tool": tool.name, "arguments": arguments, "rationale": action.rationale},
        )
        audit_record(
            actor="policy",
            action="approvals.policy.verdict",
            target=run,
            data={"tool": tool.name, "step": call_step.index, **verdict.as_dict()},
        )
        if verdict.guardrails:
            audit_record(
                actor="policy",
                action="agents.guardrail.hit",
                target=run,
                data={"stage": "arguments", "tool": tool.name, "hits": verdict.guardrails},
            )

        if verdict.verdict == "block":
            ToolCall.objects.filter(pk=tool_call.pk).update(status=ToolCallStatus.BLOCKED)
            _record_step(
                run,
                Step.Kind.OBSERVATION,
                error=f"Blocked: {verdict.reason}",
                input={"call_step": call_step.index, "tool": tool.name, "status": "blocked"},
            )
            return "blocked"

        if verdict.verdict == "require_approval":
            ToolCall.objects.filter(pk=tool_call.pk).update(status=ToolCallStatus.AWAITING)
            tool_call.status = ToolCallStatus.AWAITING
            _pause(locked, tool_call=tool_call, verdict=verdict, risk_class=tool.risk)
            return "waiting"

        # execute or execute_and_review: approved by policy, for exactly these arguments
        ToolCall.objects.filter(pk=tool_call.pk).update(status=ToolCallStatus.APPROVED, approved_hash=digest)
        if verdict.verdict == "execute_and_review":
            approval_request_create(run=run, tool_call=tool_call, verdict=verdict, risk_class=tool.risk)
    return "execute"


def _execute_with_timeout(tool, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        try:
            return tool.run(arguments, context)
        finally:
            # The tool ran in its own thread, with its own database connection.
            connection.close()

    if connection.in_atomic_block:
        # Inside an outer transaction a second connection could not see its data: run inline.
        return tool.run(arguments, context)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tool-{tool.name}")
    future = pool.submit(call)
    try:
        return future.result(timeout=tool.timeout_seconds)
    except FutureTimeout:
        raise TimeoutError(f"{tool.name} did not finish within {tool.timeout_seconds} s") from None
    finally:
        # Never wait for a hung tool: its thread is left to finish on its own. A retry passes
        # the same idempotency key, so a late first attempt cannot apply the effect twice.
        pool.shutdown(wait=False)


def tool_call_execute(*, run: Run, tool_call: ToolCall) -> None:
    """Run one approved call through the ledger: claim, verify the approval, execute, record."""
    tool = registry.get(tool_call.tool)
    claimed = ToolCall.objects.filter(pk=tool_call.pk, status=ToolCallStatus.APPROVED).update(
        status=ToolCallStatus.EXECUTING, attempts=F("attempts") + 1
    )
    tool_call.refresh_from_db()
    output: dict[str, Any] | None = None
    if not claimed:
        if tool_call.status != ToolCallStatus.EXECUTING:
            return  # someone else finished it meanwhile
        # Left "executing" by a crashed worker: look for the effect before doing anything.
        # A read-only tool has no effect to look for; running it again is safe.
        output = tool.lookup(str(tool_call.idempotency_key)) if tool and tool.lookup else None
        if output is None and (tool is None or (tool.lookup is None and tool.risk != Risk.READ)):
            _tool_call_finish(
                run,
                tool_call,
                status=ToolCallStatus.UNKNOWN,
                error="The call was interrupted and its outcome cannot be checked; a person must reconcile it.",
                fail_run=True,
            )
            return
    if tool is None or arguments_hash(tool_call.arguments) != tool_call.approved_hash:
        # Fail closed: the approval names the exact arguments; anything else is refused.
        _tool_call_finish(
            run,
            tool_call,
            status=ToolCallStatus.FAILED,
            error="Refused: the arguments differ from the approved arguments.",
        )
        return

    started = time.monotonic()
    error = ""
    if output is None:
        context = ToolContext(idempotency_key=str(tool_call.idempotency_key), run_id=run.pk, agent_slug=run.agent.slug)
        for attempt in range(settings.TOOL_MAX_ATTEMPTS):
            if attempt:
                time.sleep(settings.TOOL_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
            try:
                output = _execute_with_timeout(tool, tool_call.arguments, context)
                error = ""
                break
            except SoftTimeLimitExceeded:
                raise  # the task is out of time, not the tool: run_advance hands the run on
            except TimeoutError as exc:
                error = f"TimeoutError: {exc}"
                logger.warning("tool %s timed out on attempt %s for run %s", tool.name, attempt + 1, run.pk)
                if tool.risk != Risk.READ:
                    # The hung attempt may still apply its effect after this: retrying, or telling
                    # the reasoner "failed" so it proposes again, could act twice. Look for the
                    # effect; without proof either way a person reconciles.
                    output = tool.lookup(str(tool_call.idempotency_key)) if tool.lookup else None
                    if output is None:
                        _tool_call_finish(
                            run,
                            tool_call,
                            status=ToolCallStatus.UNKNOWN,
                            error=f"{error}; the effect may still happen, so a person must reconcile it.",
                            latency_ms=int((time.monotonic() - started) * 1000),
                            fail_run=True,
                        )
                        return
                    error = ""
                    break
                if attempt + 1 < settings.TOOL_MAX_ATTEMPTS:
                    ToolCall.objects.filter(pk=tool_call.pk).update(attempts=F("attempts") + 1)
            except Exception as exc:  # noqa: BLE001 - any tool failure is recorded and retried
                error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "tool %s failed on attempt %s for run %s: %s", tool.name, attempt + 1, run.pk, type(exc).__name__
                )
                if attempt + 1 < settings.TOOL_MAX_ATTEMPTS:
                    ToolCall.objects.filter(pk=tool_call.pk).update(attempts=F("attempts") + 1)
    latency_ms = int((time.monotonic() - started) * 1000)
    if output is None:
        _tool_call_finish(run, tool_call, status=ToolCallStatus.FAILED, error=error, latency_ms=latency_ms)
    else:
        _tool_call_finish(run, tool_call, status=ToolCallStatus.SUCCEEDED, output=output, latency_ms=latency_ms)


def _tool_call_finish(
    run: Run,
    tool_call: ToolCall,
    *,
    status: str,
    output: Any = None,
    error: str = "",
    latency_ms: int = 0,
    fail_run: bool = False,
) -> None:
    from approvals.guardrails import check_output

    hits = check_output(tool_call.tool, output) if output is not None else []
    blocked = [hit for hit in hits if hit.effect == "block"]
    with audited_atomic():
        updated = ToolCall.objects.filter(pk=tool_call.pk, status=ToolCallStatus.EXECUTING).update(
            status=status, output=output, error=error, latency_ms=latency_ms
        )
        if not updated:
            return  # already recorded by another worker
        observed = output
        if blocked:
            observed = {"withheld": f"output withheld by guardrail {blocked[0].name}"}
        _record_step(
            run,
            Step.Kind.OBSERVATION,
            output=observed,
            error=error,
            latency_ms=latency_ms,
            verdict="block" if blocked else ("flag" if hits else ""),
            verdict_reason="; ".join(f"guardrail {h.name}: {h.message}" for h in hits),
            input={"call_step": tool_call.step, "tool": tool_call.tool, "status": status},
        )
        audit_record(
            actor=run.agent,
            action="agents.tool_call.executed",
            target=run,
            data={
                "tool": tool_call.tool,
                "step": tool_call.step,
                "status": status,
                "arguments": tool_call.arguments,
                "output": output,
                "error": error,
                "latency_ms": latency_ms,
            },
        )
        if hits:
            audit_record(
                actor="policy",
                action="agents.guardrail.hit",
                target=run,
                data={"stage": "output", "tool": tool_call.tool, "hits": [h.as_dict() for h in hits]},
            )
            _output_review(run, tool_call, hits=hits)
        if fail_run:
            _finish(Run.objects.select_for_update(no_key=True).get(pk=run.pk), RunStatus.FAILED, error=error)


def _output_review(run: Run, tool_call: ToolCall, *, hits: list[Any]) -> None:
    """A guardrail hit on a tool's output asks a person to look at it: the effect has happened,
    so it is an after-the-fact review item (unless the call already has one, as at level 3)."""
    from approvals.models import ApprovalRequest
    from approvals.policy import CheckpointVerdict
    from approvals.services import approval_request_create

    if ApprovalRequest.objects.filter(tool_call=tool_call).exists():
        return
    tool = registry.get(tool_call.tool)
    verb = "withheld from the agent" if any(hit.effect == "block" for hit in hits) else "flagged"
    reason = f"the output was {verb} by guardrail {hits[0].name}: {hits[0].message}"
    verdict = CheckpointVerdict(
        "execute_and_review",
        reason,
        kind="review",
        level=run.agent.autonomy_level,
        guardrails=[h.as_dict() for h in hits],
    )
    approval_request_create(
        run=run, tool_call=tool_call, verdict=verdict, risk_class=tool.risk if tool else Risk.WRITE_IRREVERSIBLE
    )


def _finish(run: Run, status: str, *, result: Any = None, error: str = "", actor: Any = None) -> None:
    """Move a locked run to a terminal status (inside the caller's transaction)."""
    run.status = status
    run.result = result
    run.error = error
    run.finished_at = timezone.now()
    run.lease_owner = ""
    run.lease_expires_at = None
    run.save(update_fields=["status", "result", "error", "finished_at", "lease_owner", "lease_expires_at"])
    action = "agents.run.cancelled" if status == RunStatus.CANCELLED else "agents.run.finished"
    audit_record(
        actor=actor or run.agent, action=action, target=run, data={"status": status, "error": error, "result": result}
    )


def _name(user: Any) -> str:
    return user.get_username() if user is not None and hasattr(user, "get_username") else "the system"


# --- Decisions coming back from the approvals app -------------------------------------------


def run_apply_decision(
    *,
    tool_call: ToolCall,
    outcome: str,
    reviewer: Any,
    arguments: dict | None = None,
    comment: str = "",
    stop_run: bool = False,
    stop_status: str = RunStatus.REJECTED,
) -> None:
    """Record a person's decision on a waiting call and make the run runnable again.

    Runs inside the decision's transaction. ``outcome``: approved (execute ``arguments``),
    rejected, answered, done, dismissed.
    """
    run = Run.objects.select_for_update(no_key=True, of=("self",)).select_related("agent").get(pk=tool_call.run_id)
    call_fields: dict[str, Any] = {}
    observation: dict[str, Any] | None = None
    status_text = outcome
    if outcome == "approved":
        final = arguments if arguments is not None else tool_call.arguments
        digest = arguments_hash(final)
        call_fields = {
            "status": ToolCallStatus.APPROVED,
            "arguments": final,
            "arguments_hash": digest,
            "approved_hash": digest,
        }
    elif outcome == "answered":
        call_fields = {"status": ToolCallStatus.SUCCEEDED, "output": {"answer": comment}}
        observation = {"answer": comment}
    elif outcome in ("done", "dismissed"):
        call_fields = {"status": ToolCallStatus.SUGGESTED, "output": {"outcome": outcome, "comment": comment}}
        observation = {"outcome": outcome, "by": _name(reviewer)}
    else:
        call_fields = {"status": ToolCallStatus.REJECTED, "error": comment}
    ToolCall.objects.filter(pk=tool_call.pk).update(**call_fields)
    _record_step(
        run,
        Step.Kind.DECISION,
        output=observation,
        error=f"Rejected by {_name(reviewer)}: {comment}" if outcome == "rejected" else "",
        input={
            "call_step": tool_call.step,
            "tool": tool_call.tool,
            "status": status_text,
            "reviewer": _name(reviewer),
            "comment": comment,
            "arguments": arguments if outcome == "approved" else None,
        },
    )
    if run.status != RunStatus.WAITING:
        return  # cancelled or ended meanwhile: the decision is recorded, nothing resumes
    if stop_run:
        if stop_status == RunStatus.CANCELLED:
            _finish(run, RunStatus.CANCELLED, error=f"Cancelled: {comment}", actor=reviewer)
        else:
            _finish(run, RunStatus.REJECTED, error=f"Rejected by {_name(reviewer)}: {comment}", actor=reviewer)
        return
    run.status = RunStatus.QUEUED
    run.enqueued_at = timezone.now()
    run.save(update_fields=["status", "enqueued_at"])
    enqueue_advance(run.pk, resume=True)


# --- Recovery ---------------------------------------------------------------------------------


def runs_recover(*, now: Any = None) -> dict[str, int]:
    """Re-enqueue runs whose lease expired or whose enqueue was lost. Safe to run any time:
    a duplicate doorbell is harmless because the lease admits one worker."""
    now = now or timezone.now()
    stale_queue = now - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS)
    lost = list(Run.objects.filter(status=RunStatus.QUEUED, enqueued_at__lt=stale_queue).values_list("pk", flat=True))
    expired = list(Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).values_list("pk", flat=True))
    for run_id in lost + expired:
        with transaction.atomic():
            Run.objects.filter(pk=run_id).update(enqueued_at=now)
            enqueue_advance(run_id)
    return {"requeued": len(lost), "lease_expired": len(expired)}
