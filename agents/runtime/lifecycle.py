"""Starting, stopping and ending runs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone

from agents import tracing
from agents.models import Agent, Run, RunStatus
from agents.runtime.status import run_move
from agents.versions import version_for_new_run
from approvals.decisions import approval_requests_cancel_for_run
from approvals.guardrails import check_input
from audit.redaction import Redactor
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser
from config.doorbell import ADVANCE_RUN, RESUME_RUN, ring
from config.errors import Conflict, DomainError
from config.parsing import json_value_errors


class AgentDisabled(Conflict):
    code = "agent_disabled"


class RunInputInvalid(DomainError):
    code = "invalid_input"


class RunNotCancellable(Conflict):
    code = "not_cancellable"


# --- Run input: JSON Schema with its formats enforced ---------------------------------------------------

# The local part of an address as mail systems and the send_email tool take it: no quoted forms,
# so nothing such as "<script>"@example.com (valid RFC 5322) passes for an email address.
EMAIL_LOCAL_PART = re.compile(r"^[A-Za-z0-9._%+-]+\Z")
IDN_EMAIL_LOCAL_PART = re.compile(r"^[\w.%+-]+\Z")


def _is_address(value: object, local_part: re.Pattern[str]) -> bool:
    if not isinstance(value, str):
        return True  # formats apply to strings; "type" says what else is allowed
    local, at, _ = value.rpartition("@")
    if not at or not local_part.match(local):
        return False
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


def _format_checker() -> jsonschema.FormatChecker:
    """The draft's format checker, with addresses checked as addresses.

    jsonschema checks "email" only for an "@" and, without optional packages (rfc3339-validator,
    rfc3986-validator, fqdn, ...), skips "date-time", "uri", "hostname" and others silently.
    The formats here are the ones it checks with what is installed; a schema that names another
    is refused (``input_schema_problems``) rather than left unchecked.
    """
    checker = jsonschema.FormatChecker(formats=())
    checker.checkers = dict(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("email")(lambda value: _is_address(value, EMAIL_LOCAL_PART))
    checker.checks("idn-email")(lambda value: _is_address(value, IDN_EMAIL_LOCAL_PART))
    return checker


INPUT_FORMAT_CHECKER = _format_checker()


def input_schema_problems(schema: Any) -> list[str]:
    """Why an agent's input schema cannot judge run input: invalid, or a format left unchecked."""
    if not schema:
        return []
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"not a valid JSON Schema: {exc.message}"]
    named = set()
    nodes = [schema]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            if isinstance(node.get("format"), str):
                named.add(node["format"])
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    unchecked = sorted(named - set(INPUT_FORMAT_CHECKER.checkers))
    if unchecked:
        supported = ", ".join(sorted(INPUT_FORMAT_CHECKER.checkers))
        return [f"format {', '.join(unchecked)} cannot be checked here; use one of {supported}, or a pattern"]
    return []


def run_input_errors(*, agent: Agent, payload: Any) -> dict[str, list[str]]:
    if not isinstance(payload, dict):
        return {"input": ["must be a JSON object"]}
    # What any caller passes (the API's parser refused it already): nesting, text, numbers.
    errors = json_value_errors(payload, root="input")
    if errors:
        return errors
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    if size > settings.RUN_INPUT_MAX_BYTES:
        return {"input": [f"is {size} bytes; the limit is {settings.RUN_INPUT_MAX_BYTES}"]}
    if agent.input_schema:
        problems = input_schema_problems(agent.input_schema)
        if problems:
            # Fail closed: input the schema cannot judge is not taken.
            return {"input": [f"the agent's input schema is unusable: {problem}" for problem in problems]}
        validator = jsonschema.Draft202012Validator(agent.input_schema, format_checker=INPUT_FORMAT_CHECKER)
        for error in sorted(validator.iter_errors(payload), key=lambda e: list(e.path)):
            field = ".".join(["input", *(str(p) for p in error.path)])
            errors.setdefault(field, []).append(error.message)
    for hit in check_input(payload):
        errors.setdefault("input", []).append(f"guardrail {hit.name}: {hit.message}")
    return errors


def run_create(
    *, agent: Agent, user: AnyUser | None, payload: Any, on_created: Callable[[Run], object] | None = None
) -> Run:
    """Create a queued run and ring its doorbell after commit. ``on_created`` runs inside the
    run's transaction: what it writes commits with the run or not at all (agents.idempotency
    stores its answer there)."""
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
        # Under the agent's lock: the version (current, or the candidate for a canary share) is the
        # one a concurrent promotion or rollback either left in place or already replaced.
        run.version = version_for_new_run(agent, run_key=run.pk)
        run.save(update_fields=["version"])
        audit_record(
            actor=user,
            action="agents.run.created",
            target=run,
            data={"input": payload, "version": run.version.number},
        )
        if on_created is not None:
            on_created(run)
        enqueue_advance(run.pk)
    return run


def enqueue_advance(run_id: int, *, resume: bool = False) -> None:
    """Ring the doorbell once the transaction that made the run runnable has committed. If the
    broker does not take it, a queued run is marked not rung (``enqueued_at`` NULL) and the
    sweeper rings it at its next period (agents.runtime.recovery)."""
    ring(RESUME_RUN if resume else ADVANCE_RUN, run_id, on_failure=lambda: run_mark_not_rung(run_id))


def run_mark_not_rung(run_id: int) -> None:
    # After commit, in autocommit. A run that left the queue meanwhile needs no doorbell.
    Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(enqueued_at=None)


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
    # Nobody need decide what an ended run waited on (calls proposed beside the one that ended
    # it, a cancel or the kill switch); after-the-fact reviews stay open.
    approval_requests_cancel_for_run(run=run, reason=f"run {status}", keep_reviews=True)
    run.status = status
    for name, value in fields.items():
        setattr(run, name, value)
    action = "agents.run.cancelled" if status == RunStatus.CANCELLED else "agents.run.finished"
    audit_record(
        actor=actor or run.agent, action=action, target=run, data={"status": status, "error": error, "result": result}
    )
    tracing.run_span(run)
    return True


def display_name(user: AnyUser | None) -> str:
    """How the trace and error messages name who acted."""
    return user.get_username() if user is not None and user.is_authenticated else "the system"
