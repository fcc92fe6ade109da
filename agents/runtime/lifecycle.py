"""Starting, stopping and ending runs."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from django.conf import settings
from django.utils import timezone

from agents.models import Agent, Run, RunStatus
from agents.runtime.status import run_move
from approvals.decisions import approval_requests_cancel_for_run
from approvals.guardrails import check_input
from audit.redaction import Redactor
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser
from config.doorbell import ADVANCE_RUN, RESUME_RUN, ring
from config.errors import Conflict, DomainError


class AgentDisabled(Conflict):
    code = "agent_disabled"


class RunInputInvalid(DomainError):
    code = "invalid_input"


class RunNotCancellable(Conflict):
    code = "not_cancellable"


def run_input_errors(*, agent: Agent, payload: Any) -> dict[str, list[str]]:
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


def run_create(*, agent: Agent, user: AnyUser | None, payload: Any) -> Run:
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
            started_by=user if user is not None and user.is_authenticated else None,
            input=payload,
            redactions=redactor.mapping,
            enqueued_at=timezone.now(),
        )
        audit_record(actor=user, action="agents.run.created", target=run, data={"input": payload})
        enqueue_advance(run.pk)
    return run


def enqueue_advance(run_id: int, *, resume: bool = False) -> None:
    """Ring the doorbell once the transaction that made the run runnable has committed."""
    ring(RESUME_RUN if resume else ADVANCE_RUN, run_id)


def run_cancel(*, run: Run, user: AnyUser | None, reason: str = "") -> Run:
    with audited_atomic():
        run = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
        if run.is_terminal:
            raise RunNotCancellable(f"Run {run.pk} already ended ({run.status}).")
        if run.status in (RunStatus.QUEUED, RunStatus.WAITING):
            # Nothing is executing: stop it here rather than at the next step boundary.
            message = f"Cancelled by {display_name(user)}" + (f": {reason}" if reason else "")
            if run_finish(run, RunStatus.CANCELLED, error=message, actor=user):
                approval_requests_cancel_for_run(run=run, reason="run cancelled")
        else:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
            audit_record(actor=user, action="agents.run.cancel_requested", target=run, data={"reason": reason})
    return run


def runs_stop_for_agent(*, agent: Agent, user: AnyUser | None) -> None:
    """Inside the kill switch's transaction: waiting and queued runs stop now, their pending
    approvals are cancelled; running ones stop at their next step boundary."""
    for run in Run.objects.select_for_update(no_key=True).filter(
        agent=agent, status__in=[RunStatus.QUEUED, RunStatus.WAITING]
    ):
        if run_finish(run, RunStatus.CANCELLED, error="Agent disabled (kill switch)", actor=user):
            approval_requests_cancel_for_run(run=run, reason="agent disabled")


def run_finish(run: Run, status: RunStatus, *, result: Any = None, error: str = "", actor: Any = None) -> bool:
    """Inside the caller's transaction (the run's row locked): move the run to an end and audit
    it. Returns whether it moved (False: it had ended already)."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "result": result,
        "error": error,
        "finished_at": now,
        "lease_owner": "",
        "lease_expires_at": None,
    }
    if not run_move(run_id=run.pk, to=status, **fields):
        return False
    run.status = status
    for name, value in fields.items():
        setattr(run, name, value)
    action = "agents.run.cancelled" if status == RunStatus.CANCELLED else "agents.run.finished"
    audit_record(
        actor=actor or run.agent, action=action, target=run, data={"status": status, "error": error, "result": result}
    )
    return True


def display_name(user: AnyUser | None) -> str:
    """How the trace and error messages name who acted."""
    return user.get_username() if user is not None and user.is_authenticated else "the system"
