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
from agents.runtime.lifecycle import enqueue_advance
from agents.runtime.status import decided_calls, run_move, tool_call_move
from agents.runtime.steps import guardrail_hits_record, reasoning_step, record_step
from agents.tools import FINAL_ANSWER, Risk, Tool, ToolArgumentsInvalid, arguments_hash, registry
from approvals.decisions import approval_request_create
from approvals.guardrails import GuardrailHit
from approvals.models import Verdict
from approvals.policy import CheckpointVerdict, RunContext, checkpoint_verdict
from audit.redaction import Redactor
from audit.services import audit_record, audited_atomic

Outcome = Literal["invalid", "blocked", "waiting", "execute"]


Wait = tuple[ToolCall, CheckpointVerdict, str]  # a call held for a person: its verdict and risk class


def propose(run: Run, agent: Agent, action: Action, redactor: Redactor, *, lease: Lease | None = None) -> Outcome:
    """Record the reasoning step, then each call it proposes (a reply may make several at once),
    each validated and judged by the policy on its own. If any waits for a person the run waits
    once, for all of them. Returns what happened: "waiting" if any waits, else "execute" if any
    may run, else "blocked" or "invalid"."""
    with audited_atomic():
        locked = hold(run, lease)
        reasoning_step(run, action)
        waits: list[Wait] = []
        outcomes = [_propose_call(run, agent, call, redactor, waits) for call in [action, *action.others]]
        if waits:
            pause(locked, waits=waits)
            return "waiting"
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


def _propose_call(run: Run, agent: Agent, action: Action, redactor: Redactor, waits: list[Wait]) -> Outcome:
    """Inside the run's transaction: one proposed call validated, judged and recorded; a call
    that needs a person is added to ``waits``."""
    tool, arguments, problem = proposal_checked(agent, action, redactor)
    proposal = {
        "tool": action.tool,
        "arguments": action.arguments if problem else arguments,
        "rationale": action.rationale,
        **({"call_id": action.call_id} if action.call_id else {}),
        **action.transcript,
    }
    if problem or tool is None:
        call_step = record_step(run, Step.Kind.TOOL_CALL, input=proposal, verdict="invalid", verdict_reason=problem)
        record_step(
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

    started = time.monotonic()
    verdict = checkpoint_verdict(
        agent=agent, tool=tool, arguments=arguments, context=RunContext(starter=run.started_by, run_id=run.pk)
    )
    call_step = record_step(
        run,
        Step.Kind.TOOL_CALL,
        input={**proposal, "policy": verdict.as_dict()},
        verdict=verdict.verdict,
        verdict_reason=verdict.reason,
        latency_ms=int((time.monotonic() - started) * 1000),
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
        guardrail_hits_record(
            run,
            step=call_step.index,
            stage=GuardrailHitRecord.Stage.ARGUMENTS,
            tool=tool.name,
            hits=verdict.guardrails,
        )

    if verdict.verdict == Verdict.BLOCK:
        tool_call_move(tool_call_id=tool_call.pk, to=ToolCallStatus.BLOCKED)
        tracing.tool_span(run, tool_call, status=ToolCallStatus.BLOCKED)
        record_step(
            run,
            Step.Kind.OBSERVATION,
            error=f"Blocked: {verdict.reason}",
            input={"call_step": call_step.index, "tool": tool.name, "status": "blocked"},
        )
        return "blocked"

    if verdict.verdict == Verdict.REQUIRE_APPROVAL:
        tool_call_move(tool_call_id=tool_call.pk, to=ToolCallStatus.AWAITING)
        tool_call.status = ToolCallStatus.AWAITING
        waits.append((tool_call, verdict, tool.risk))
        return "waiting"

    # execute or execute_and_review: approved by policy, for exactly these arguments
    tool_call_move(tool_call_id=tool_call.pk, to=ToolCallStatus.APPROVED, approved_hash=digest)
    if verdict.verdict == Verdict.EXECUTE_AND_REVIEW:
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
