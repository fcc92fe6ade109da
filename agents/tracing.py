"""OpenTelemetry spans of runs, named and attributed after the GenAI semantic conventions.

A run lives across many tasks, processes and waits for people, so no span stays open for it.
Its trace id and root span id are keyed hashes of the run; every child span (a reasoning step,
a tool call, a wait for a person) is emitted when it ends, with the root as its parent, and the
root ``invoke_agent`` span once, with the run's own start and end, when the run ends. Spans
leave after the transaction that recorded their event commits: a rolled-back step emits none.

Content goes through the audit log's masks (``audit.redaction``); people appear only as a
keyed pseudonym. Without a tracer provider (``config.telemetry``) every hook returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from audit.redaction import mask_text
from config import telemetry

if TYPE_CHECKING:
    from agents.models import Run, ToolCall
    from approvals.models import ApprovalRequest
    from audit.types import AnyUser

AttributeValue = str | int | float | bool | Sequence[str]


class Proposal(Protocol):
    """What a span needs of a reasoner's ``Action`` (this data layer sits below the reasoners)."""

    @property
    def kind(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def latency_ms(self) -> int: ...
    @property
    def finish_reason(self) -> str: ...


KEY_SALT = "countersign.agents.tracing"
# What a reasoner's proposal says about why the model stopped, when the reply did not say.
FINISH_REASONS = {"tool": "tool_calls", "final": "stop", "invalid": "error"}
# Errors in the span's sense; a block, a rejection or a cancel is an outcome someone chose.
FAILED_RUN_STATUSES = {"failed"}
FAILED_CALL_STATUSES = {"failed", "unknown"}


# --- Ids: the same in every process, from the run and SECRET_KEY -----------------------------------


def _keyed(*parts: object, bits: int) -> int:
    digest = salted_hmac(KEY_SALT, ":".join(str(part) for part in parts), algorithm="sha256").digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1  # 0 is the invalid id


def _run_key(run: Run) -> str:
    # The creation time keeps two databases' run 7 (a restore, a test database) apart.
    return f"{run.pk}@{run.created_at.isoformat()}"


def run_trace_id(run: Run) -> str:
    """The run's trace id as collectors show it (32 hex digits)."""
    return f"{_keyed('trace', _run_key(run), bits=128):032x}"


def _root_span_id(run: Run) -> int:
    return _keyed("span", _run_key(run), "root", bits=64)


def reviewer_pseudonym(user: AnyUser | None) -> str:
    """A stable id for a person that names nobody outside this deployment: an HMAC of the
    user id keyed from SECRET_KEY, never a username or an address."""
    if user is None or user.pk is None:
        return ""
    return salted_hmac(f"{KEY_SALT}.reviewer", str(user.pk), algorithm="sha256").hexdigest()[:32]


def tracing_enabled() -> bool:
    return telemetry.tracer() is not None


# --- Emission ---------------------------------------------------------------------------------------


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _emit(
    run: Run,
    *,
    name: str,
    key: Sequence[object],
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, AttributeValue],
    kind: SpanKind = SpanKind.INTERNAL,
    failed: bool = False,
) -> None:
    """After commit: one finished span of the run's trace. ``key`` names it within the run
    (a child), or is empty for the root."""
    trace_id = int(run_trace_id(run), 16)
    root = _root_span_id(run)
    span_id = _keyed("span", _run_key(run), *key, bits=64) if key else root
    parent = (
        set_span_in_context(
            # The root is emitted later, maybe by another process: a parent known by its ids only.
            NonRecordingSpan(SpanContext(trace_id, root, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
        )
        if key
        else Context()
    )
    # Statuses are TextChoices members: exported as plain strings. Empty values are left out.
    clean = {attr: str(value) if isinstance(value, str) else value for attr, value in attributes.items() if value != ""}
    end_ns = max(end_ns, start_ns)

    def send() -> None:
        tracer = telemetry.tracer()
        if tracer is None:
            return
        with telemetry.pinned_ids(trace_id=trace_id, span_id=span_id):
            span = tracer.start_span(name, context=parent, kind=kind, attributes=clean, start_time=start_ns)
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)

    transaction.on_commit(send)


def _masked(text: str) -> str:
    """Free text as the audit log stores it: secrets out, PII masked."""
    return mask_text(text)[:500]


def chat_span(run: Run, action: Proposal, *, step: int) -> None:
    """A reasoning step: which model answered, its tokens and why it stopped."""
    if not tracing_enabled():
        return
    end = time.time_ns()
    model = action.model
    _emit(
        run,
        name=f"chat {model}" if model else "chat",
        key=("chat", step),
        start_ns=end - action.latency_ms * 1_000_000,
        end_ns=end,
        kind=SpanKind.CLIENT if model else SpanKind.INTERNAL,
        failed=action.kind == "invalid",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": run.agent.reasoner,
            "gen_ai.agent.id": run.agent.slug,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": action.prompt_tokens,
            "gen_ai.usage.output_tokens": action.completion_tokens,
            "gen_ai.response.finish_reasons": [action.finish_reason or FINISH_REASONS[action.kind]],
            "countersign.step.index": step,
            "countersign.proposal": action.kind,
            "error.type": "invalid_proposal" if action.kind == "invalid" else "",
        },
    )


def tool_span(run: Run, tool_call: ToolCall, *, status: str, latency_ms: int = 0) -> None:
    """A tool call at its end: executed, failed, blocked by the policy, or decided by a person."""
    if not tracing_enabled():
        return
    end = time.time_ns()
    failed = status in FAILED_CALL_STATUSES
    _emit(
        run,
        name=f"execute_tool {tool_call.tool}",
        key=("tool", tool_call.step),
        start_ns=end - latency_ms * 1_000_000,
        end_ns=end,
        failed=failed,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool_call.tool,
            "gen_ai.tool.call.id": _call_id(tool_call),
            "gen_ai.tool.type": "function",
            "countersign.policy.verdict": tool_call.verdict,
            "countersign.policy.reason": _masked(tool_call.verdict_reason),
            "countersign.tool_call.status": status,
            "countersign.tool_call.attempts": tool_call.attempts,
            "error.type": status if failed else "",
        },
    )


def _call_id(tool_call: ToolCall) -> str:
    """The id the model gave the call (as the reasoner sees it), or ``call_<step>`` without one."""
    from agents.models import Step

    stored = (
        Step.objects.filter(run_id=tool_call.run_id, index=tool_call.step)
        .values_list("input__call_id", flat=True)
        .first()
    )
    return str(stored or f"call_{tool_call.step}")


def decision_spans(run: Run, approval: ApprovalRequest, *, call_status: str) -> None:
    """A decision the run applies: the wait for it, and the call when the decision ended it
    (rejected, answered, a suggestion done or dismissed); an approved call ends when it runs."""
    if not tracing_enabled():
        return
    wait_span(run, approval)
    if call_status != "approved":
        tool_span(run, approval.tool_call, status=call_status)


def wait_span(run: Run, approval: ApprovalRequest) -> None:
    """A wait for a person, from the approval request to the decision."""
    if not tracing_enabled():
        return
    decided = approval.decided_at or timezone.now()
    verdicts = sorted({decision.verdict for decision in approval.decisions.all()})
    _emit(
        run,
        name=f"await_decision {approval.tool}",
        key=("wait", approval.pk),
        start_ns=_ns(approval.created_at),
        end_ns=_ns(decided),
        attributes={
            "gen_ai.operation.name": "await_decision",
            "gen_ai.tool.name": approval.tool,
            "gen_ai.tool.call.id": _call_id(approval.tool_call),
            "countersign.approval.id": approval.pk,
            "countersign.approval.kind": approval.kind,
            "countersign.approval.verdict": approval.status,
            "countersign.approval.decisions": verdicts,
            "countersign.approval.risk": approval.risk_class,
            "countersign.reviewer.id": reviewer_pseudonym(approval.decided_by),
        },
    )


def run_span(run: Run) -> None:
    """The root span, once, when the run has reached its end (``run_finish``)."""
    if not tracing_enabled():
        return
    agent = run.agent
    finished = run.finished_at or timezone.now()
    failed = run.status in FAILED_RUN_STATUSES
    _emit(
        run,
        name=f"invoke_agent {agent.name}",
        key=(),
        start_ns=_ns(run.started_at or run.created_at),
        end_ns=_ns(finished),
        failed=failed,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent.name,
            "gen_ai.agent.id": agent.slug,
            "gen_ai.provider.name": agent.reasoner,
            "countersign.run.id": run.pk,
            "countersign.run.status": run.status,
            "countersign.run.steps": run.step_count,
            "countersign.run.cost": float(run.cost),
            "error.type": run.status if failed else "",
        },
    )
