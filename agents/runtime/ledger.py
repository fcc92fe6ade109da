"""The tool-call ledger's executor: claim an approved call, verify its approval, run it, record it.

A redelivered task never runs a side effect twice: the claim is a conditional move from
``approved`` to ``executing``, a retry passes the same idempotency key, and a call found
``executing`` (its worker crashed) is reconciled by looking for its effect, never blindly rerun.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection
from django.db.models import F

from agents import tracing
from agents.models import GuardrailHitRecord, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.runtime.lease import Lease, hold
from agents.runtime.lifecycle import run_finish
from agents.runtime.status import tool_call_claim_move, tool_call_move
from agents.runtime.steps import StepBatch, Trace, guardrail_hits_record, record_step
from agents.tools import Risk, Tool, ToolContext, ToolFailed, arguments_hash, registry
from approvals.decisions import approval_request_create
from approvals.guardrails import GuardrailEffect, GuardrailHit, check_output
from approvals.models import ApprovalKind, ApprovalRequest, Verdict
from approvals.policy import CheckpointVerdict
from audit.models import AuditEvent
from audit.services import audit_event, audit_record, audit_record_many, audited_atomic

logger = logging.getLogger(__name__)


class _ToolThread(threading.local):
    """The thread this thread's tool calls run in, kept between calls: starting a thread for
    each call cost more than a step's own work. One per calling thread, so calls made at once
    in one process never queue behind each other (the timeout counts the call alone)."""

    pool: ThreadPoolExecutor | None = None
    pid: int = 0

    def get(self) -> ThreadPoolExecutor:
        if self.pool is None or self.pid != os.getpid():  # a forked worker does not have its parent's thread
            self.pool, self.pid = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tool"), os.getpid()
        return self.pool

    def abandon(self) -> None:
        # Never wait for a hung tool: its thread is left to finish on its own and the next call
        # gets a fresh one. A retry passes the same idempotency key, so a late first attempt
        # cannot apply the effect twice.
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        self.pool = None


_tool_thread = _ToolThread()


def execute_with_timeout(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    def call() -> dict[str, Any]:
        try:
            return tool.run(arguments, context)
        finally:
            # The tool ran in its own thread, with its own database connection: none is kept
            # open between calls (nor a transaction or a broken connection left for the next).
            connection.close()

    if connection.in_atomic_block:
        # Inside an outer transaction a second connection could not see its data: run inline.
        return tool.run(arguments, context)
    future = _tool_thread.get().submit(call)
    try:
        return future.result(timeout=tool.timeout_seconds)
    except FutureTimeout:
        _tool_thread.abandon()
        raise TimeoutError(f"{tool.name} did not finish within {tool.timeout_seconds} s") from None


def tool_call_claim(*, run: Run, tool_call: ToolCall, lease: Lease | None) -> bool:
    """Move an approved call to ``executing``: this worker, and no other, runs it now.

    With ``lease``, the same UPDATE checks the step boundary: the run is still this worker's
    and running, not cancelled, and its agent is not switched off. A call left approved is the
    loop's to look at again."""
    if lease is None:
        claimed = tool_call_move(
            tool_call_id=tool_call.pk,
            to=ToolCallStatus.EXECUTING,
            source=ToolCallStatus.APPROVED,
            attempts=F("attempts") + 1,
        )
    else:
        claimed = tool_call_claim_move(tool_call_id=tool_call.pk, run_id=run.pk, lease_token=lease.token)
    if claimed:
        # The row is as this worker last read or wrote it, moved by the claim: not read back.
        tool_call.status, tool_call.attempts = ToolCallStatus.EXECUTING, tool_call.attempts + 1
    return claimed


def tool_call_execute(
    *,
    run: Run,
    tool_call: ToolCall,
    lease: Lease | None = None,
    claimed: bool = False,
    trace: Trace | None = None,
    defer: bool = False,
) -> CallResult | None:
    """Run one approved call through the ledger: claim, verify the approval, execute, record.
    ``claimed``: the caller has claimed it already (tool_call_claim); ``trace`` is given the
    observation recorded. With ``defer`` (and ``trace``), the result of a read that no guardrail
    hit is not written here but returned, for the caller to write with the run's next writes
    (``read_result_write``): a read has no effect, so losing it to a crash loses nothing the
    ledger cannot do again (the call stays "executing" and the next worker runs it again)."""
    tool = registry.get(tool_call.tool)
    claimed = claimed or tool_call_claim(run=run, tool_call=tool_call, lease=lease)
    output: dict[str, Any] | None = None
    if not claimed:
        tool_call.refresh_from_db()
        if tool_call.status != ToolCallStatus.EXECUTING:
            return None  # someone else finished it meanwhile
        # Left "executing" by a crashed worker: look for the effect before doing anything.
        # A read-only tool has no effect to look for; running it again is safe.
        output = tool.lookup(str(tool_call.idempotency_key)) if tool and tool.lookup else None
        if output is None and (tool is None or (tool.lookup is None and tool.risk != Risk.READ)):
            tool_call_finish(
                run,
                tool_call,
                status=ToolCallStatus.UNKNOWN,
                error="The call was interrupted and its outcome cannot be checked; a person must reconcile it.",
                fail_run=True,
            )
            return None
    if tool is None or arguments_hash(tool_call.arguments) != tool_call.approved_hash:
        # Fail closed: the approval names the exact arguments; anything else is refused.
        tool_call_finish(
            run,
            tool_call,
            status=ToolCallStatus.FAILED,
            error="Refused: the arguments differ from the approved arguments.",
        )
        return None

    started = time.monotonic()
    error = ""
    if output is None:
        context = ToolContext(idempotency_key=str(tool_call.idempotency_key), run_id=run.pk, agent_slug=run.agent.slug)
        for attempt in range(settings.TOOL_MAX_ATTEMPTS):
            if attempt:
                time.sleep(settings.TOOL_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
            try:
                output = execute_with_timeout(tool, tool_call.arguments, context)
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
                        tool_call_finish(
                            run,
                            tool_call,
                            status=ToolCallStatus.UNKNOWN,
                            error=f"{error}; the effect may still happen, so a person must reconcile it.",
                            latency_ms=int((time.monotonic() - started) * 1000),
                            fail_run=True,
                        )
                        return None
                    error = ""
                    break
                if attempt + 1 < settings.TOOL_MAX_ATTEMPTS:
                    ToolCall.objects.filter(pk=tool_call.pk).update(attempts=F("attempts") + 1)
            except Exception as exc:  # noqa: BLE001 - any tool failure is recorded and retried
                error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "tool %s failed on attempt %s for run %s: %s", tool.name, attempt + 1, run.pk, type(exc).__name__
                )
                if not (tool.idempotent or tool.is_read_only):
                    # No idempotency key: never retried. A failure the tool reported is a failure;
                    # any other (the answer was lost on the way) leaves the effect unknown.
                    if isinstance(exc, ToolFailed):
                        break
                    tool_call_finish(
                        run,
                        tool_call,
                        status=ToolCallStatus.UNKNOWN,
                        error=f"{error}; the call may have taken effect, so a person must reconcile it.",
                        latency_ms=int((time.monotonic() - started) * 1000),
                        fail_run=True,
                    )
                    return None
                if attempt + 1 < settings.TOOL_MAX_ATTEMPTS:
                    ToolCall.objects.filter(pk=tool_call.pk).update(attempts=F("attempts") + 1)
    latency_ms = int((time.monotonic() - started) * 1000)
    status = ToolCallStatus.FAILED if output is None else ToolCallStatus.SUCCEEDED
    deferrable = defer and trace is not None and trace.follows(run.step_count + 1) and tool.is_read_only
    if deferrable and trace is not None and (output is None or not check_output(tool.name, output)):
        result = CallResult(tool_call, status=status, output=output, error=error, latency_ms=latency_ms)
        # The step is numbered after the run's last (only the lease holder adds steps); the
        # reasoner sees it before it is written, and its write checks the number.
        result.step = Step(
            run=run, index=run.step_count + 1, kind=Step.Kind.OBSERVATION, **_observation(tool_call, result, [])
        )
        trace.add([result.step])
        return result
    tool_call_finish(run, tool_call, status=status, output=output, error=error, latency_ms=latency_ms, trace=trace)
    return None


@dataclass
class CallResult:
    """A call's result as it is recorded; a read's, not written yet (tool_call_execute's ``defer``)."""

    tool_call: ToolCall
    status: ToolCallStatus
    output: Any
    error: str
    latency_ms: int
    step: Step | None = None


def _observation(tool_call: ToolCall, result: CallResult, hits: list[GuardrailHit]) -> dict[str, Any]:
    """The observation step's fields for a call's result (its output withheld if a guardrail blocks it)."""
    blocked = [hit for hit in hits if hit.effect == GuardrailEffect.BLOCK]
    observed = result.output
    if blocked:
        observed = {"withheld": f"output withheld by guardrail {blocked[0].name}"}
    return {
        "output": observed,
        "error": result.error,
        "latency_ms": result.latency_ms,
        "verdict": GuardrailEffect.BLOCK if blocked else (GuardrailEffect.FLAG if hits else ""),
        "verdict_reason": "; ".join(f"guardrail {h.name}: {h.message}" for h in hits),
        "input": {"call_step": tool_call.step, "tool": tool_call.tool, "status": result.status},
    }


def _executed_event(run: Run, tool_call: ToolCall, result: CallResult) -> AuditEvent:
    return audit_event(
        actor=run.agent,
        action="agents.tool_call.executed",
        target=run,
        data={
            "tool": tool_call.tool,
            "step": tool_call.step,
            "status": result.status,
            "arguments": tool_call.arguments,
            "output": result.output,
            "error": result.error,
            "latency_ms": result.latency_ms,
        },
    )


def read_result_write(run: Run, result: CallResult, *, batch: StepBatch | None = None) -> None:
    """Inside the caller's transaction: write a deferred read's result, as tool_call_finish does
    (the move from "executing", its observation step and event); into ``batch`` when given (the
    run's next writes, under its lock), else at once. Nothing if another worker recorded it."""
    tool_call = result.tool_call
    moved = tool_call_move(
        tool_call_id=tool_call.pk,
        to=result.status,
        source=ToolCallStatus.EXECUTING,
        output=result.output,
        error=result.error,
        latency_ms=result.latency_ms,
    )
    if not moved:
        return  # already recorded by another worker
    fields = _observation(tool_call, result, [])
    if batch is not None:
        step = batch.step(Step.Kind.OBSERVATION, **fields)
        if result.step is not None and step.index != result.step.index:
            # Another writer added a step since the reasoner saw this one: the proposal was made
            # on a history that is not the run's. A programming error; the transaction rolls back.
            raise RuntimeError(f"run {run.pk}: a step was recorded while a read's result waited")
        batch.events.append(_executed_event(run, tool_call, result))
    else:
        # On its own (the loop stops or does something else next): numbered where it lands.
        record_step(run, Step.Kind.OBSERVATION, **fields)
        audit_record_many([_executed_event(run, tool_call, result)])
    tracing.tool_span(run, tool_call, status=result.status, latency_ms=result.latency_ms)


def tool_call_finish(
    run: Run,
    tool_call: ToolCall,
    *,
    status: ToolCallStatus,
    output: Any = None,
    error: str = "",
    latency_ms: int = 0,
    fail_run: bool = False,
    trace: Trace | None = None,
) -> None:
    hits = check_output(tool_call.tool, output) if output is not None else []
    result = CallResult(tool_call, status=status, output=output, error=error, latency_ms=latency_ms)
    with audited_atomic():
        moved = tool_call_move(
            tool_call_id=tool_call.pk,
            to=status,
            source=ToolCallStatus.EXECUTING,
            output=output,
            error=error,
            latency_ms=latency_ms,
        )
        if not moved:
            return  # already recorded by another worker
        step = record_step(run, Step.Kind.OBSERVATION, **_observation(tool_call, result, hits))
        if trace is not None:
            trace.add([step])
        tracing.tool_span(run, tool_call, status=status, latency_ms=latency_ms)
        audit_record_many([_executed_event(run, tool_call, result)])  # audit_record's append, at less cost
        if hits:
            audit_record(
                actor="policy",
                action="agents.guardrail.hit",
                target=run,
                data={"stage": "output", "tool": tool_call.tool, "hits": [h.as_dict() for h in hits]},
            )
            guardrail_hits_record(
                run,
                step=step.index,
                stage=GuardrailHitRecord.Stage.OUTPUT,
                tool=tool_call.tool,
                hits=[h.as_dict() for h in hits],
            )
            _output_review(run, tool_call, hits=hits)
        if fail_run:
            run_finish(Run.objects.select_for_update(no_key=True).get(pk=run.pk), RunStatus.FAILED, error=error)


def _output_review(run: Run, tool_call: ToolCall, *, hits: list[GuardrailHit]) -> None:
    """A guardrail hit on a tool's output asks a person to look at it: the effect has happened,
    so it is an after-the-fact review item (unless the call already has one, as at level 3)."""
    if ApprovalRequest.objects.filter(tool_call=tool_call).exists():
        return
    tool = registry.get(tool_call.tool)
    verb = "withheld from the agent" if any(hit.effect == GuardrailEffect.BLOCK for hit in hits) else "flagged"
    reason = f"the output was {verb} by guardrail {hits[0].name}: {hits[0].message}"
    verdict = CheckpointVerdict(
        Verdict.EXECUTE_AND_REVIEW,
        reason,
        kind=ApprovalKind.REVIEW,
        level=run.agent.autonomy_level,
        guardrails=[h.as_dict() for h in hits],
    )
    approval_request_create(
        run=run, tool_call=tool_call, verdict=verdict, risk_class=tool.risk if tool else Risk.WRITE_IRREVERSIBLE
    )


def final_answer_release(run: Run, tool_call: ToolCall, *, lease: Lease) -> None:
    """A person approved the flagged final answer: exactly that answer becomes the result."""
    with audited_atomic():
        locked = hold(run, lease)
        if arguments_hash(tool_call.arguments) != tool_call.approved_hash:
            # Fail closed, as for any approved call.
            if tool_call_move(tool_call_id=tool_call.pk, to=ToolCallStatus.FAILED, source=ToolCallStatus.APPROVED):
                run_finish(locked, RunStatus.FAILED, error="Refused: the answer differs from the approved answer.")
            return
        if tool_call_move(
            tool_call_id=tool_call.pk,
            to=ToolCallStatus.SUCCEEDED,
            source=ToolCallStatus.APPROVED,
            output=tool_call.arguments,
        ):
            run_finish(locked, RunStatus.SUCCEEDED, result=tool_call.arguments["answer"])
