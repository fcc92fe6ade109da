"""The one writer of Run.status and ToolCall.status.

Each move is a conditional UPDATE from the statuses the model's map allows (``RUN_MOVES``,
``TOOL_CALL_MOVES`` in ``agents.models``): two writers racing for a row cannot both move it, and
the loser learns it from the return value instead of overwriting the winner.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef, Q

from agents.models import RUN_MOVES, TOOL_CALL_MOVES, Agent, Run, RunStatus, ToolCall, ToolCallStatus
from approvals.models import ApprovalRequest, ApprovalStatus
from config.rows import rows_insert

# What each decided status does to the waiting call, and the word the run's trace (and the
# reasoner's history) records for it.
DECIDED: dict[str, tuple[ToolCallStatus, str]] = {
    ApprovalStatus.APPROVED: (ToolCallStatus.APPROVED, "approved"),
    ApprovalStatus.REJECTED: (ToolCallStatus.REJECTED, "rejected"),
    ApprovalStatus.EXPIRED: (ToolCallStatus.REJECTED, "rejected"),
    ApprovalStatus.ANSWERED: (ToolCallStatus.SUCCEEDED, "answered"),
    ApprovalStatus.DONE: (ToolCallStatus.SUGGESTED, "done"),
    ApprovalStatus.DISMISSED: (ToolCallStatus.SUGGESTED, "dismissed"),
}


class StatusMoveRefused(Exception):
    """A move that no map allows: a programming error, never a race."""


def _sources(moves: dict[str, frozenset[str]], to: str) -> list[str]:
    sources = [source for source, targets in moves.items() if to in targets]
    if not sources:
        raise StatusMoveRefused(f"nothing may move to {to!r}")
    return sources


def run_move(*, run_id: int, to: RunStatus, where: Q | None = None, **fields: Any) -> bool:
    """Move the run to ``to`` from any status allowed to reach it (and matching ``where``).
    Returns whether it moved."""
    rows = Run.objects.filter(pk=run_id, status__in=_sources(RUN_MOVES, to))
    if where is not None:
        rows = rows.filter(where)
    return rows.update(status=to, **fields) == 1


def tool_call_move(
    *,
    tool_call_id: int,
    to: ToolCallStatus,
    source: ToolCallStatus | None = None,
    where: Q | None = None,
    **fields: Any,
) -> bool:
    """Move the call to ``to``: from ``source`` when given (which the map must allow), else from
    any status allowed to reach it (and matching ``where``). Returns whether it moved."""
    sources = _sources(TOOL_CALL_MOVES, to)
    if source is not None:
        if source not in sources:
            raise StatusMoveRefused(f"a tool call may not move from {source!r} to {to!r}")
        sources = [source]
    if where is None and not any(hasattr(value, "resolve_expression") for value in fields.values()):
        return _tool_call_update(tool_call_id=tool_call_id, sources=sources, values={"status": to, **fields})
    rows = ToolCall.objects.filter(pk=tool_call_id, status__in=sources)
    if where is not None:
        rows = rows.filter(where)
    return rows.update(status=to, **fields) == 1


def tool_call_insert(tool_call: ToolCall, *, path: tuple[ToolCallStatus, ...] = ()) -> None:
    """Insert a new call (``proposed``) already moved along ``path``, each move one the map
    allows: the moves a proposal makes at once under its run's lock, written with the row
    instead of an UPDATE each. ``executing`` counts the attempt, as the claim does."""
    status: str = ToolCallStatus.PROPOSED
    for to in path:
        if to not in TOOL_CALL_MOVES[status]:
            raise StatusMoveRefused(f"a tool call may not move from {status!r} to {to!r}")
        status = to
    if tool_call.status != ToolCallStatus.PROPOSED or tool_call.pk is not None:
        raise StatusMoveRefused("only a new call, proposed, is inserted")
    tool_call.status = status
    if status == ToolCallStatus.EXECUTING:
        tool_call.attempts += 1
    rows_insert([tool_call])


_TOOL_CALL_FIELDS = {field.name: field for field in ToolCall._meta.concrete_fields}


def _tool_call_update(*, tool_call_id: int, sources: list[str], values: dict[str, Any]) -> bool:
    """``ToolCall.objects.filter(pk=..., status__in=sources).update(**values)`` for plain values,
    written out: a step moves its call two or three times, and the ORM's building of the
    statement cost more than the database took to run it. Each field converts its own value."""
    quote = connection.ops.quote_name
    fields = [_TOOL_CALL_FIELDS[name] for name in values]
    assignments = ", ".join(f"{quote(str(field.column))} = %s" for field in fields)
    params = [field.get_db_prep_save(value, connection) for field, value in zip(fields, values.values(), strict=True)]
    statuses = ", ".join(["%s"] * len(sources))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(ToolCall._meta.db_table)} SET {assignments} WHERE id = %s AND status IN ({statuses})",  # noqa: S608 - the model's own table
            [*params, tool_call_id, *sources],
        )
        moved: int = cursor.rowcount
    return moved == 1


def tool_call_claim_move(*, tool_call_id: int, run_id: int, lease_token: str) -> bool:
    """Move an approved call to ``executing`` (one more attempt) only while its run is running
    under ``lease_token``, not cancelled, and its agent is on: the step boundary, checked in the
    same statement. Returns whether it moved.

    Written out, not built by the ORM: it runs at every step, and building the subquery cost
    more than the database took to run it."""
    if ToolCallStatus.EXECUTING not in TOOL_CALL_MOVES[ToolCallStatus.APPROVED]:
        raise StatusMoveRefused("a tool call may not move from 'approved' to 'executing'")
    quote = connection.ops.quote_name
    call, run, agent = (quote(model._meta.db_table) for model in (ToolCall, Run, Agent))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {call} SET status = %s, attempts = attempts + 1 WHERE id = %s AND status = %s "  # noqa: S608 - the models' own tables
            f"AND EXISTS (SELECT 1 FROM {run} r INNER JOIN {agent} a ON a.id = r.agent_id "
            "WHERE r.id = %s AND r.status = %s AND r.lease_owner = %s AND r.cancel_requested = %s AND a.enabled = %s)",
            [
                ToolCallStatus.EXECUTING.value,
                tool_call_id,
                ToolCallStatus.APPROVED.value,
                run_id,
                RunStatus.RUNNING.value,
                lease_token,
                False,
                True,
            ],
        )
        moved: int = cursor.rowcount
    return moved == 1


def decided_calls() -> Exists:
    """The run has a call waiting for a person whose approval is decided: the decision is in the
    database, and a worker applies it under its lease."""
    return Exists(
        ApprovalRequest.objects.filter(
            run=OuterRef("pk"), tool_call__status=ToolCallStatus.AWAITING, status__in=list(DECIDED)
        )
    )
