"""The run's trace: numbered steps, and what the reasoner may see of them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from django.db import connection

from agents import tracing
from agents.models import Agent, GuardrailHitRecord, Run, Step
from agents.reasoners import Action
from agents.reasoners.base import ModelSettings, RunView, ToolSpec
from agents.tools import registry
from audit.models import AuditEvent
from audit.redaction import Redactor
from audit.services import Actor, audit_event, audit_record, audit_record_many
from config.rows import rows_insert

COST_QUANTUM = Decimal("0.000001")  # Step.cost and Run.cost keep six decimal places


def record_step(
    run: Run,
    kind: str,
    *,
    input: dict[str, Any] | None = None,
    output: Any = None,
    error: str = "",
    verdict: str = "",
    verdict_reason: str = "",
    latency_ms: int = 0,
    model: str = "",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost: Decimal | int = 0,
) -> Step:
    # Rounded as the column stores it, so that a run's cost is the sum of its steps' costs.
    cost = Decimal(cost).quantize(COST_QUANTUM)
    # The UPDATE holds the run's row lock until the caller's transaction ends, so two writers
    # never take the same index; RETURNING (PostgreSQL, SQLite 3.35+) reads the new values back.
    run.step_count, run.cost = _count_step(run.pk, cost)
    step = Step(
        run=run,
        index=run.step_count,
        kind=kind,
        input=input or {},
        output=output,
        error=error,
        verdict=verdict,
        verdict_reason=verdict_reason,
        latency_ms=latency_ms,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=cost,
    )
    rows_insert([step])
    return step


class StepBatch:
    """A step's writes gathered and made at once: its steps with one INSERT and one UPDATE of the
    run's count, its audit events with one INSERT.

    Only under the run's row lock (``hold``): the locked row's count is the truth until commit,
    so the steps are numbered from it here. ``flush`` writes what was gathered, in order; call it
    before any other writer of the run's steps or audit events in the same transaction, so that
    the log keeps the order in which things happened.
    """

    def __init__(self, run: Run, *, locked: Run, trace: Trace | None = None) -> None:
        self.run = run
        self.trace = trace
        self.count = locked.step_count
        self.steps: list[Step] = []
        self.events: list[AuditEvent] = []

    def step(self, kind: str, *, input: dict[str, Any] | None = None, cost: Decimal | int = 0, **fields: Any) -> Step:
        """As ``record_step``: the step with its index, written at ``flush``."""
        cost = Decimal(cost).quantize(COST_QUANTUM)
        self.count += 1
        step = Step(run=self.run, index=self.count, kind=kind, input=input or {}, cost=cost, **fields)
        self.steps.append(step)
        return step

    def audit(self, *, actor: Actor, action: str, data: dict[str, Any]) -> None:
        """As ``audit_record`` with the run as target, appended at ``flush``."""
        self.events.append(audit_event(actor=actor, action=action, target=self.run, data=data))

    def flush(self) -> None:
        if self.steps:
            added = sum((step.cost for step in self.steps), Decimal(0))
            if connection.vendor == "postgresql":
                # The count's UPDATE and the steps' INSERT in one statement (one round trip).
                (counted,) = rows_insert(self.steps, counted=_count_sql(self.run.pk, added, steps=len(self.steps)))
                count, self.run.cost = int(counted["step_count"]), Decimal(str(counted["cost"])).quantize(COST_QUANTUM)
            else:
                count, self.run.cost = _count_step(self.run.pk, added, steps=len(self.steps))
            if count != self.count:
                # Another step was recorded in this transaction after the batch began: the
                # indexes given here are taken. A programming error; the transaction rolls back.
                raise RuntimeError(f"run {self.run.pk}: a step was recorded beside an open StepBatch")
            if connection.vendor != "postgresql":
                rows_insert(self.steps)
            self.run.step_count = count
            if self.trace is not None:
                self.trace.add(self.steps)
        audit_record_many(self.events)
        self.steps, self.events = [], []


def _count_sql(run_id: int, cost: Decimal, *, steps: int = 1) -> tuple[str, list[Any]]:
    """The UPDATE that counts ``steps`` more steps and their cost, returning the new values."""
    table = connection.ops.quote_name(Run._meta.db_table)
    cost_field = Run._meta.get_field("cost")
    return (
        f"UPDATE {table} SET step_count = step_count + %s, cost = cost + %s WHERE id = %s "  # noqa: S608 - the model's own table
        "RETURNING step_count, cost",
        [
            steps,
            connection.ops.adapt_decimalfield_value(cost, cost_field.max_digits, cost_field.decimal_places),
            run_id,
        ],
    )


def _count_step(run_id: int, cost: Decimal, *, steps: int = 1) -> tuple[int, Decimal]:
    with connection.cursor() as cursor:
        cursor.execute(*_count_sql(run_id, cost, steps=steps))
        step_count, total = cursor.fetchone()
    return int(step_count), Decimal(str(total)).quantize(COST_QUANTUM)


def guardrail_hits_record(
    run: Run, *, step: int, stage: GuardrailHitRecord.Stage, tool: str, hits: list[dict[str, str]]
) -> None:
    """Inside the step's transaction: one row per hit, what the metrics count."""
    GuardrailHitRecord.objects.bulk_create(
        GuardrailHitRecord(run=run, step=step, stage=stage, tool=tool, name=hit["name"], effect=hit["effect"])
        for hit in hits
    )


def reasoning_step(run: Run, action: Action, *, batch: StepBatch | None = None) -> Step:
    """The reasoner's answer as a step and its audit event; gathered in ``batch`` when given."""
    event: dict[str, Any] = {
        "actor": run.agent,
        "action": "agents.step.reasoning",
        "data": {
            "prompt_tail": action.prompt_tail,
            "reply": action.transcript,
            "proposal": action.kind,
            "tool": action.tool,
            "rationale": action.rationale,
            "error": action.error,
            "tokens": [action.prompt_tokens, action.completion_tokens],
        },
    }
    fields: dict[str, Any] = {
        "input": {
            "proposal": action.kind,
            "tool": action.tool,
            "rationale": action.rationale,
            "transcript": action.transcript,
        },
        "output": {"answer": action.answer} if action.kind == "final" else None,
        "error": action.error,
        "latency_ms": action.latency_ms,
        "model": action.model,
        "prompt_tokens": action.prompt_tokens,
        "completion_tokens": action.completion_tokens,
        "cost": action.cost,
    }
    if batch is None:
        audit_record(target=run, **event)
        step = record_step(run, Step.Kind.REASONING, **fields)
    else:
        batch.audit(**event)
        step = batch.step(Step.Kind.REASONING, **fields)
    tracing.chat_span(run, action, step=step.index)
    return step


def run_view(run: Run, redactor: Redactor) -> RunView:
    """What the reasoner may see: the run's history with PII and secrets replaced by placeholders."""
    call_ids: dict[int, str] = {}
    history = [entry for step in run.steps.order_by("index") if (entry := _history_entry(step, call_ids))]
    return reasoner_view(run.agent, input=run.input, history=history, redactor=redactor)


class Trace:
    """``run_view`` kept up step by step within a task: each step is read and redacted once.

    The same view: steps are only ever appended, and a value once redacted keeps its placeholder
    (the loop saves the mapping as the run's before the next view), redacted in the same order,
    the input first.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last = 0  # steps are numbered from 1
        self.call_ids: dict[int, str] = {}
        self.history: list[dict[str, Any]] = []
        self.unredacted: list[dict[str, Any]] = []
        self.tools = _tool_specs(run.agent)  # the agent's behaviour is the run's version's: fixed

    def add(self, steps: list[Step]) -> None:
        """Steps this worker has just recorded, in its transaction, so that they need not be read
        back; any that does not follow the last one known is left to be read."""
        for step in steps:
            if step.index <= self.last:
                continue  # known already (a read's result seen before it was written)
            if step.index != self.last + 1:
                return
            self._take(step)

    def follows(self, index: int) -> bool:
        """Whether a step numbered ``index`` is the next one known here (add() takes it)."""
        return index == self.last + 1

    def view(self, redactor: Redactor) -> RunView:
        redacted_input = redactor.redact(self.run.input)
        # The count was read with the run at the top of the step: a step recorded by anyone
        # else, or not handed to add(), is read here.
        if self.run.step_count > self.last:
            for step in self.run.steps.filter(index__gt=self.last).order_by("index"):
                self._take(step)
        self._redact(redactor)
        return _view(self.run.agent, input=redacted_input, history=list(self.history), tools=list(self.tools))

    def _take(self, step: Step) -> None:
        self.last = step.index
        entry = _history_entry(step, self.call_ids)
        if entry is not None:
            self.unredacted.append(entry)

    def _redact(self, redactor: Redactor) -> None:
        # Redacted at the view, in order after the input: the mapping grows as run_view's would.
        self.history.extend(cast(dict[str, Any], redactor.redact(entry)) for entry in self.unredacted)
        self.unredacted = []


def _history_entry(step: Step, call_ids: dict[int, str]) -> dict[str, Any] | None:
    # The model's own call ids are kept (some servers require their own format); older steps
    # without one are named by their index.
    data = step.input or {}
    if step.kind == Step.Kind.TOOL_CALL:
        call_ids[step.index] = str(data.get("call_id") or f"call_{step.index}")
        return {
            "type": "tool_call",
            "id": call_ids[step.index],
            "tool": data.get("tool", ""),
            "arguments": data.get("arguments"),
            "rationale": data.get("rationale", ""),
            "playbook_step": data.get("playbook_step", ""),
        }
    if step.kind in (Step.Kind.OBSERVATION, Step.Kind.DECISION) and data.get("call_step"):
        return {
            "type": "observation",
            "call_id": call_ids.get(data["call_step"], f"call_{data['call_step']}"),
            "tool": data.get("tool", ""),
            "status": data.get("status", ""),
            "output": step.output,
            "error": step.error,
            "comment": data.get("comment", ""),
        }
    return None


def reasoner_view(agent: Agent, *, input: Any, history: list[dict[str, Any]], redactor: Redactor) -> RunView:
    """The redacted view of an input and its history under the agent's behaviour: what a run's
    reasoner sees, and what an evaluation case's sees."""
    redacted_input = redactor.redact(input)
    return _view(agent, input=redacted_input, history=cast(list[dict[str, Any]], redactor.redact(history)))


def _tool_specs(agent: Agent) -> list[ToolSpec]:
    return [
        ToolSpec(name, registry[name].description, registry[name].input_schema())
        for name in agent.tools
        if name in registry
    ]


def _view(agent: Agent, *, input: Any, history: list[dict[str, Any]], tools: list[ToolSpec] | None = None) -> RunView:
    return RunView(
        objective=agent.objective,
        scope=agent.scope,
        system_prompt=agent.system_prompt,
        input=input,
        history=history,
        tools=_tool_specs(agent) if tools is None else tools,
        playbook=agent.playbook,
        model=ModelSettings(
            model=agent.llm_model,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            tool_choice=agent.tool_choice,
        ),
    )
