"""Finished runs that people corrected, as cases of an evaluation dataset (``export_feedback``).

A run is a case when someone gave feedback on it or a reviewer edited one of its calls. The case
holds what the model saw (the input with its placeholders, never the real values), the steps,
the calls as proposed and as decided, and the expected calls: the approved or edited ones.

Reads only. Runs are streamed in chunks with their steps, calls, approvals and feedback
prefetched per chunk, so memory stays flat and the queries grow with the chunks, not the runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from agents.models import TERMINAL_RUN_STATUSES, Agent, Run, RunFeedback, Step, ToolCall, ToolCallStatus
from agents.tools import FINAL_ANSWER
from approvals.models import ApprovalRequest, ApprovalStatus, Decision, DecisionVerdict
from audit.redaction import Redactor
from audit.types import JSON, JSONObject

# An output longer than this (as JSON) is cut: the case says what came back, not all of it.
OUTPUT_SUMMARY_CHARS = 2000
# Decisions whose call the run was right to make: the expected calls of the case.
EXPECTED_DECISIONS = frozenset({"approved", "edited", "executed", "answered", "done", "reviewed_ok"})


def feedback_case_runs(*, agent: Agent, since: datetime | None = None) -> QuerySet[Run]:
    """The agent's finished runs with feedback or a reviewer's edit, oldest first."""
    edited = Decision.objects.filter(request__run=OuterRef("pk"), verdict=DecisionVerdict.EDIT)
    given = RunFeedback.objects.filter(run=OuterRef("pk"))
    runs = Run.objects.filter(agent=agent, status__in=list(TERMINAL_RUN_STATUSES)).filter(
        Q(Exists(given)) | Q(Exists(edited))
    )
    if since is not None:
        runs = runs.filter(created_at__gte=since)
    return runs.order_by("id")


def feedback_cases(*, runs: QuerySet[Run], chunk_size: int = 200) -> Iterator[JSONObject]:
    """One case per run of ``runs``, in order; a fixed number of queries per chunk."""
    prefetched = runs.select_related("agent").prefetch_related(
        Prefetch("steps", queryset=Step.objects.order_by("index")),
        Prefetch("tool_calls", queryset=ToolCall.objects.select_related("approval").order_by("step"), to_attr="ledger"),
        Prefetch("feedback", queryset=RunFeedback.objects.order_by("created_at", "id"), to_attr="given"),
    )
    for run in prefetched.iterator(chunk_size=chunk_size):
        yield feedback_case(run)


def feedback_case(run: Run) -> JSONObject:
    """The case of one run, prefetched as ``feedback_cases`` does. Everything that may hold
    PII goes through the run's own redactor: the placeholders the model saw, the same ones for
    the same values."""
    redactor = Redactor(run.redactions)
    # Set by the Prefetch objects' to_attr, which the model does not declare.
    ledger: list[ToolCall] = run.ledger  # type: ignore[attr-defined]
    given: list[RunFeedback] = run.given  # type: ignore[attr-defined]
    decided = [_decided(call, redactor) for call in ledger]
    feedback = [
        {
            "rating": item.rating,
            "correction": redactor.redact_text(item.correction),
            "by": "starter" if item.user_id == run.started_by_id else "reviewer",
        }
        for item in given
    ]
    return {
        "run": run.pk,
        "agent": run.agent.slug,
        "input": redactor.redact(run.input),
        "steps": [_step(step, redactor) for step in run.steps.all()],
        "proposed": [
            {
                "step": call.step,
                "tool": call.tool,
                "arguments": redactor.redact(_proposed_arguments(call)),
                "rationale": redactor.redact_text(call.rationale),
            }
            for call in ledger
        ],
        "approved": decided,
        "feedback": feedback,
        "expected": {
            "tool_calls": [
                {"tool": entry["tool"], "arguments": entry["arguments"]}
                for entry in decided
                if entry["decision"] in EXPECTED_DECISIONS and entry["tool"] != FINAL_ANSWER
            ],
            "outcome": run.status,
            "corrections": [entry["correction"] for entry in feedback if entry["correction"]],
        },
    }


def _approval(call: ToolCall) -> ApprovalRequest | None:
    try:
        return call.approval
    except ApprovalRequest.DoesNotExist:
        return None


def _proposed_arguments(call: ToolCall) -> JSON:
    # An approved edit overwrites the ledger's arguments; the request keeps the proposal.
    approval = _approval(call)
    return approval.arguments if approval is not None else call.arguments


def _decided(call: ToolCall, redactor: Redactor) -> dict[str, Any]:
    """The call as it was decided: by a person (approved, edited, rejected...), or by the policy
    (executed, blocked)."""
    approval = _approval(call)
    if approval is None:
        blocked = call.status == ToolCallStatus.BLOCKED
        return {
            "step": call.step,
            "tool": call.tool,
            "decision": "blocked" if blocked else "executed",
            "arguments": None if blocked else redactor.redact(call.arguments),
            "reason": redactor.redact_text(call.verdict_reason) if blocked else "",
            "by": "policy",
        }
    edited = approval.status == ApprovalStatus.APPROVED and approval.decided_arguments is not None
    decision = "edited" if edited else str(approval.status)
    return {
        "step": call.step,
        "tool": call.tool,
        "decision": decision,
        "arguments": redactor.redact(approval.pending_arguments) if decision in EXPECTED_DECISIONS else None,
        "reason": redactor.redact_text(approval.resolution_comment),
        "by": "reviewer" if approval.decided_by_id else "system",
    }


def _step(step: Step, redactor: Redactor) -> JSONObject:
    data = step.input or {}
    entry: JSONObject = {"index": step.index, "kind": step.kind, "tool": data.get("tool", "")}
    if step.kind == Step.Kind.REASONING:
        entry["proposal"] = data.get("proposal", "")
        entry["rationale"] = redactor.redact_text(str(data.get("rationale") or ""))
    if step.kind in (Step.Kind.TOOL_CALL, Step.Kind.DECISION) and data.get("arguments") is not None:
        entry["arguments"] = redactor.redact(data["arguments"])
    if step.kind in (Step.Kind.OBSERVATION, Step.Kind.DECISION):
        entry["status"] = data.get("status", "")
    if step.verdict:
        entry["verdict"] = step.verdict
    entry["output"] = _summary(redactor.redact(step.output))
    if step.error:
        entry["error"] = redactor.redact_text(step.error)
    return entry


def _summary(value: JSON) -> JSON:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) <= OUTPUT_SUMMARY_CHARS:
        return value
    return text[:OUTPUT_SUMMARY_CHARS] + "…"
