"""One case in evaluation mode: the runtime's loop, in memory, never through the ledger.

The same reasoner sees a view of the same shape as ``run_view`` gives it; each proposal is
validated as the runtime validates it (``proposal_checked``) and judged by the same
``checkpoint_verdict``. Read-only tools (``Risk.READ``) run, since what they return is what the
reasoner reasons on. Any other proposal is recorded with its verdict and answered with a
synthetic observation, status ``not_executed``, and the case goes on: the reasoner shows the
rest of its plan (stopping at the first side effect would score only the first call). A
reasoner whose next step depends on a side effect's result sees that it did not happen.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agents.models import Agent
from agents.reasoners import Action, Reasoner, ReasonerError
from agents.reasoners.base import RunView
from agents.runtime.proposals import proposal_checked
from agents.runtime.steps import reasoner_view
from agents.tools import Tool, ToolContext
from approvals.guardrails import GuardrailEffect, check_final
from approvals.models import Verdict
from approvals.policy import RunContext, checkpoint_verdict
from audit.redaction import Redactor
from audit.types import JSON, JSONObject

NOT_EXECUTED = "not_executed"
MAX_INVALID_PROPOSALS = 3


@dataclass
class CaseTrace:
    """What one case did: its proposals, how it ended, and what it cost."""

    outcome: str = "failed"  # succeeded, failed, or waiting (a flagged final answer)
    answer: JSON = None
    error: str = ""
    proposals: list[JSONObject] = field(default_factory=list)
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal("0")
    latency_ms: int = 0


def case_run(*, agent: Agent, reasoner: Reasoner, case_input: JSONObject, starter: Any) -> CaseTrace:
    """Run one case of ``agent`` (a saved agent or an unsaved one with a version's behaviour),
    acting for ``starter`` as a run started by them would."""
    started = time.monotonic()
    trace = CaseTrace()
    redactor = Redactor()
    history: list[JSONObject] = []
    invalid = 0
    while trace.steps < agent.max_steps and trace.cost < agent.max_cost:
        try:
            action = reasoner.next_action(_view(agent, case_input, history, redactor))
        except ReasonerError as exc:
            trace.error = str(exc)
            break
        _count(trace, action)
        if action.kind == "final":
            _final(trace, redactor.restore(action.answer))
            break
        outcomes = [_propose(trace, agent, call, redactor, history, starter) for call in [action, *action.others]]
        invalid = invalid + 1 if all(outcome == "invalid" for outcome in outcomes) else 0
        if invalid >= MAX_INVALID_PROPOSALS:
            trace.error = f"The reasoner proposed {invalid} invalid actions in a row."
            break
    else:
        trace.error = f"Budget exhausted after {trace.steps} steps (cost {trace.cost})."
    trace.latency_ms = int((time.monotonic() - started) * 1000)
    return trace


def _view(agent: Agent, case_input: JSONObject, history: list[JSONObject], redactor: Redactor) -> RunView:
    return reasoner_view(agent, input=case_input, history=history, redactor=redactor)


def _count(trace: CaseTrace, action: Action) -> None:
    trace.steps += 1
    trace.prompt_tokens += action.prompt_tokens
    trace.completion_tokens += action.completion_tokens
    trace.cost += action.cost


def _final(trace: CaseTrace, answer: JSON) -> None:
    hits = check_final(answer)
    trace.answer = answer
    if any(hit.effect == GuardrailEffect.BLOCK for hit in hits):
        trace.error = f"The final answer was blocked by guardrail {hits[0].name}."
    elif hits:
        trace.outcome = "waiting"  # a flagged answer waits for a person, as in a run
    else:
        trace.outcome = "succeeded"


def _propose(
    trace: CaseTrace, agent: Agent, action: Action, redactor: Redactor, history: list[JSONObject], starter: Any
) -> str:
    """One proposed call checked and judged; executed only when its tool is read-only."""
    tool, arguments, problem = proposal_checked(agent, action, redactor)
    call_id = action.call_id or f"call_{len(history) + 1}"
    history.append(
        {
            "type": "tool_call",
            "id": call_id,
            "tool": action.tool,
            "arguments": arguments,
            "rationale": action.rationale,
            "playbook_step": str(action.transcript.get("playbook_step") or ""),
        }
    )
    read_only = tool is not None and tool.is_read_only
    proposal: JSONObject = {"tool": action.tool, "arguments": arguments, "read_only": read_only}
    if problem or tool is None:
        trace.proposals.append({**proposal, "verdict": "invalid", "reason": problem, "executed": False})
        history.append(_observation(call_id, action.tool, "invalid", error=problem))
        return "invalid"
    verdict = checkpoint_verdict(agent=agent, tool=tool, arguments=arguments, context=RunContext(starter=starter))
    executes = read_only and verdict.verdict == Verdict.EXECUTE
    trace.proposals.append({**proposal, "verdict": verdict.verdict, "reason": verdict.reason, "executed": executes})
    if verdict.verdict == Verdict.BLOCK:
        history.append(_observation(call_id, tool.name, "blocked", error=f"Blocked: {verdict.reason}"))
    elif executes:
        history.append(_read(tool, arguments, call_id, agent))
    else:
        note = f"Not executed in evaluation (the policy said {verdict.verdict}: {verdict.reason})."
        history.append(_observation(call_id, tool.name, NOT_EXECUTED, error=note))
    return verdict.verdict


def _read(tool: Tool, arguments: JSONObject, call_id: str, agent: Agent) -> JSONObject:
    context = ToolContext(idempotency_key=f"eval-{uuid.uuid4()}", agent_slug=agent.slug)
    try:
        output = tool.run(arguments, context)
    except Exception as exc:  # a tool's failure is an observation for the reasoner, as in a run
        return _observation(call_id, tool.name, "failed", error=f"{type(exc).__name__}: {exc}")
    return _observation(call_id, tool.name, "succeeded", output=output)


def _observation(call_id: str, tool: str, status: str, *, output: JSON = None, error: str = "") -> JSONObject:
    return {
        "type": "observation",
        "call_id": call_id,
        "tool": tool,
        "status": status,
        "output": output,
        "error": error,
        "comment": "",
    }
