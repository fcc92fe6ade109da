"""The run's trace: numbered steps, and what the reasoner may see of them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import connection

from agents import tracing
from agents.models import Agent, GuardrailHitRecord, Run, Step
from agents.reasoners import Action
from agents.reasoners.base import ModelSettings, RunView, ToolSpec
from agents.tools import registry
from audit.redaction import Redactor
from audit.services import audit_record

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
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=cost,
    )


def _count_step(run_id: int, cost: Decimal) -> tuple[int, Decimal]:
    table = connection.ops.quote_name(Run._meta.db_table)
    cost_field = Run._meta.get_field("cost")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET step_count = step_count + 1, cost = cost + %s WHERE id = %s "  # noqa: S608 - the model's own table
            "RETURNING step_count, cost",
            [connection.ops.adapt_decimalfield_value(cost, cost_field.max_digits, cost_field.decimal_places), run_id],
        )
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


def reasoning_step(run: Run, action: Action) -> Step:
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
    step = record_step(
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
        model=action.model,
        prompt_tokens=action.prompt_tokens,
        completion_tokens=action.completion_tokens,
        cost=action.cost,
    )
    tracing.chat_span(run, action, step=step.index)
    return step


def run_view(run: Run, redactor: Redactor) -> RunView:
    """What the reasoner may see: the run's history with PII and secrets replaced by placeholders."""
    agent = run.agent
    history: list[dict[str, Any]] = []
    # The model's own call ids are kept (some servers require their own format); older steps
    # without one are named by their index.
    call_ids: dict[int, str] = {}
    for step in run.steps.order_by("index"):
        data = step.input or {}
        if step.kind == Step.Kind.TOOL_CALL:
            call_ids[step.index] = str(data.get("call_id") or f"call_{step.index}")
            history.append(
                {
                    "type": "tool_call",
                    "id": call_ids[step.index],
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
                    "call_id": call_ids.get(data["call_step"], f"call_{data['call_step']}"),
                    "tool": data.get("tool", ""),
                    "status": data.get("status", ""),
                    "output": step.output,
                    "error": step.error,
                    "comment": data.get("comment", ""),
                }
            )
    return reasoner_view(agent, input=run.input, history=history, redactor=redactor)


def reasoner_view(agent: Agent, *, input: Any, history: list[dict[str, Any]], redactor: Redactor) -> RunView:
    """The redacted view of an input and its history under the agent's behaviour: what a run's
    reasoner sees, and what an evaluation case's sees."""
    tools = [
        ToolSpec(name, registry[name].description, registry[name].input_schema())
        for name in agent.tools
        if name in registry
    ]
    return RunView(
        objective=agent.objective,
        scope=agent.scope,
        system_prompt=agent.system_prompt,
        input=redactor.redact(input),
        history=redactor.redact(history),
        tools=tools,
        playbook=agent.playbook,
        model=ModelSettings(
            model=agent.llm_model,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            tool_choice=agent.tool_choice,
        ),
    )
