"""A proposed action at the checkpoint: validated, judged by the policy, recorded, and either
cleared for the ledger, blocked, or held for a person."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from agents import tracing
from agents.models import Agent, GuardrailHitRecord, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.reasoners import Action
from agents.runtime.lease import Lease, hold
from agents.runtime.ledger import CallResult, read_result_write, tool_call_claim
from agents.runtime.lifecycle import enqueue_advance
from agents.runtime.status import decided_calls, run_move, tool_call_insert, tool_call_move
from agents.runtime.steps import StepBatch, Trace, guardrail_hits_record, reasoning_step
from agents.tools import FINAL_ANSWER, Risk, Tool, ToolArgumentsInvalid, arguments_hash, registry
from approvals.decisions import approval_request_create
from approvals.guardrails import GuardrailHit
from approvals.models import Verdict
from approvals.policy import CheckpointVerdict, RunContext, checkpoint_verdict
from audit.redaction import Redactor
from audit.services import audit_record, audited_atomic

Outcome = Literal["invalid", "blocked", "waiting", "execute"]


Wait = tuple[ToolCall, CheckpointVerdict, str]  # a call held for a person: its verdict and risk class


def propose(
    run: Run,
    agent: Agent,
    action: Action,
    redactor: Redactor,
    *,
    lease: Lease | None = None,
    cleared: list[ToolCall] | None = None,
    trace: Trace | None = None,
    result: CallResult | None = None,
) -> Outcome:
    """Record the reasoning step, then each call it proposes (a reply may make several at once),
    each validated and judged by the policy on its own. If any waits for a person the run waits
    once, for all of them. Returns what happened: "waiting" if any waits, else "execute" if any
    may run, else "blocked" or "invalid". The calls cleared to run are added to ``cleared``, in
    order; the first may be claimed already (status ``executing``). ``result``: the previous
    call's, a read's, written here first (tool_call_execute's ``defer``)."""
    cleared = [] if cleared is None else cleared
    with audited_atomic():
        locked = hold(run, lease)
        # The run's row is locked: the step's rows and events are numbered here and written at once.
        batch = StepBatch(run, locked=locked, trace=trace)
        if result is not None:
            read_result_write(run, result, batch=batch)  # the last step's read, first
        reasoning_step(run, action, batch=batch)
        waits: list[Wait] = []
        # A lone call, a read the policy clears, is claimed as it is written (status executing,
        # one attempt): under the run's lock, held with the lease, the step boundary is checked
        # here as the claim checks it (not cancelled, the agent on). A crash before it runs
        # leaves it "executing", and since a read has no effect the next worker runs it again.
        claim = lease is not None and not action.others and not locked.cancel_requested
        claim = claim and bool(getattr(locked, "agent_enabled", False))
        outcomes = [
            _propose_call(run, agent, call, redactor, waits, batch, cleared, claim=claim)
            for call in [action, *action.others]
        ]
        batch.flush()
        if waits:
            pause(locked, waits=waits)
            return "waiting"
        tool = registry.get(cleared[0].tool) if cleared else None
        if tool is not None and tool.is_read_only and cleared[0].status == ToolCallStatus.APPROVED:
            # The first call to run, a read, is claimed in the proposal's commit (its status
            # says so): a crash before it runs leaves it "executing", and since a read has no
            # effect the next worker runs it again (the ledger). One commit less a step.
            tool_call_claim(run=run, tool_call=cleared[0], lease=lease)
    for outcome in ("execute", "blocked"):
        if outcome in outcomes:
            return outcome
    return "invalid"


def proposal_checked(agent: Agent, action: Action, redactor: Redactor) -> tuple[Tool | None, Any, str]:
    """The proposed call's tool and its validated real arguments, or the problem that refuses it.
    Also what an evaluation checks its proposals with (agents.evaluation)."""
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
    return tool, arguments, problem


def _propose_call(
    run: Run,
    agent: Agent,
    action: Action,
    redactor: Redactor,
    waits: list[Wait],
    batch: StepBatch,
    cleared: list[ToolCall],
    *,
    claim: bool = False,
) -> Outcome:
    """Inside the run's transaction: one proposed call validated, judged and recorded; a call
    that needs a person is added to ``waits``, one cleared to run to ``cleared``."""
    tool, arguments, problem = proposal_checked(agent, action, redactor)
    proposal = {
        "tool": action.tool,
        "arguments": action.arguments if problem else arguments,
        "rationale": action.rationale,
        **({"call_id": action.call_id} if action.call_id else {}),
        **action.transcript,
    }
    if problem or tool is None:
        call_step = batch.step(Step.Kind.TOOL_CALL, input=proposal, verdict="invalid", verdict_reason=problem)
        batch.step(
            Step.Kind.OBSERVATION,
            error=problem,
            input={"call_step": call_step.index, "tool": action.tool, "status": "invalid"},
        )
        batch.audit(
            actor=agent,
            action="agents.tool_call.refused",
            data={"tool": action.tool, "arguments": action.arguments, "reason": problem},
        )
        return "invalid"

    started = time.monotonic()
    verdict = checkpoint_verdict(
        agent=agent, tool=tool, arguments=arguments, context=RunContext(starter=run.started_by, run_id=run.pk)
    )
    call_step = batch.step(
        Step.Kind.TOOL_CALL,
        input={**proposal, "policy": verdict.as_dict()},
        verdict=verdict.verdict,
        verdict_reason=verdict.reason,
        latency_ms=int((time.monotonic() - started) * 1000),
    )
    digest = arguments_hash(arguments)
    # The call is written with the moves the verdict makes (one INSERT, no UPDATE after it).
    path: tuple[ToolCallStatus, ...] = (ToolCallStatus.APPROVED,)
    if verdict.verdict == Verdict.BLOCK:
        path = (ToolCallStatus.BLOCKED,)
    elif verdict.verdict == Verdict.REQUIRE_APPROVAL:
        path = (ToolCallStatus.AWAITING,)
    elif claim and verdict.verdict == Verdict.EXECUTE and tool.is_read_only:
        path = (ToolCallStatus.APPROVED, ToolCallStatus.EXECUTING)
    tool_call = ToolCall(
        run=run,
        step=call_step.index,
        tool=tool.name,
        arguments=arguments,
        arguments_hash=digest,
        rationale=action.rationale,
        verdict=verdict.verdict,
        verdict_reason=verdict.reason,
        approved_hash=digest if path[0] == ToolCallStatus.APPROVED else "",
    )
    tool_call_insert(tool_call, path=path)
    batch.audit(
        actor=agent,
        action="agents.tool_call.proposed",
        data={"tool": tool.name, "arguments": arguments, "rationale": action.rationale},
    )
    batch.audit(
        actor="policy",
        action="approvals.policy.verdict",
        data={"tool": tool.name, "step": call_step.index, **verdict.as_dict()},
    )
    if verdict.guardrails:
        batch.audit(
            actor="policy",
            action="agents.guardrail.hit",
            data={"stage": "arguments", "tool": tool.name, "hits": verdict.guardrails},
        )
        guardrail_hits_record(
            run,
            step=call_step.index,
            stage=GuardrailHitRecord.Stage.ARGUMENTS,
            tool=tool.name,
            hits=verdict.guardrails,
        )

    if verdict.verdict == Verdict.BLOCK:
        tracing.tool_span(run, tool_call, status=ToolCallStatus.BLOCKED)
        batch.step(
            Step.Kind.OBSERVATION,
            error=f"Blocked: {verdict.reason}",
            input={"call_step": call_step.index, "tool": tool.name, "status": "blocked"},
        )
        return "blocked"

    if verdict.verdict == Verdict.REQUIRE_APPROVAL:
        waits.append((tool_call, verdict, tool.risk))
        return "waiting"

    # execute or execute_and_review: approved by policy, for exactly these arguments
    cleared.append(tool_call)
    if verdict.verdict == Verdict.EXECUTE_AND_REVIEW:
        batch.flush()  # the request writes its own event: the log keeps the order of the step
        approval_request_create(run=run, tool_call=tool_call, verdict=verdict, risk_class=tool.risk)
    return "execute"


def final_answer_hold(run: Run, *, step: Step, answer: Any, rationale: str, hits: list[GuardrailHit]) -> None:
    """A flagged final answer waits for a person, as a flagged action does at every level:
    approved, it becomes the run's result; rejected, the run ends."""
    reason = f"the final answer was flagged by guardrail {hits[0].name}: {hits[0].message}"
    arguments = {"answer": answer}
    tool_call = ToolCall.objects.create(
        run=run,
        step=step.index,
        tool=FINAL_ANSWER,
        arguments=arguments,
        arguments_hash=arguments_hash(arguments),
        rationale=rationale,
        verdict=Verdict.REQUIRE_APPROVAL,
        verdict_reason=reason,
    )
    tool_call_move(tool_call_id=tool_call.pk, to=ToolCallStatus.AWAITING)
    tool_call.status = ToolCallStatus.AWAITING
    verdict = CheckpointVerdict(
        Verdict.REQUIRE_APPROVAL, reason, level=run.agent.autonomy_level, guardrails=[h.as_dict() for h in hits]
    )
    pause(run, waits=[(tool_call, verdict, Risk.WRITE_IRREVERSIBLE)])


def pause(run: Run, *, waits: list[Wait]) -> None:
    """Inside the locked run's transaction: the run waits for a person and lets go of its lease;
    an approval request is made for each held call and pushed on commit. The task then ends."""
    run_move(run_id=run.pk, to=RunStatus.WAITING, lease_owner="", lease_expires_at=None)
    run.status = RunStatus.WAITING
    run.lease_owner = ""
    run.lease_expires_at = None
    for tool_call, verdict, risk_class in waits:
        approval_request_create(run=run, tool_call=tool_call, verdict=verdict, risk_class=risk_class)
        audit_record(
            actor=run.agent,
            action="agents.run.paused",
            target=run,
            data={"tool": tool_call.tool, "reason": verdict.reason},
        )


def wait_for_the_rest(run: Run, *, lease: Lease) -> bool:
    """A run whose calls were proposed together goes on only once every one is decided: while
    one still waits for a person, the run waits again. Returns whether it waits.

    A decision committed while this worker held the lease found the run running and its
    doorbell was ignored; it is looked for again after the run waits, and rung here."""
    awaiting = ToolCall.objects.filter(run_id=run.pk, status=ToolCallStatus.AWAITING)
    with audited_atomic():
        hold(run, lease)
        waiting = list(awaiting.values_list("tool", flat=True))
        if not waiting:
            return False
        run_move(run_id=run.pk, to=RunStatus.WAITING, lease_owner="", lease_expires_at=None)
        audit_record(actor=run.agent, action="agents.run.paused", target=run, data={"waiting_for": waiting})
    if Run.objects.filter(decided_calls(), pk=run.pk, status=RunStatus.WAITING).exists():
        enqueue_advance(run.pk, resume=True)
    return True
