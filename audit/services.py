from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TypeAlias, cast

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from audit.chain import GENESIS_HASH, content_hash, json_value
from audit.models import AuditEvent
from audit.redaction import mask_secrets
from audit.selectors import audit_head
from config.rows import rows_insert

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

__all__ = ["GENESIS_HASH", "audit_event", "audit_head", "audit_record", "audit_record_many", "audited_atomic"]


# agents.Agent and agents.Run as the log reads them: audit imports nothing from the apps that
# write to it, so it knows them by their shape (and at run time by their model label or name).
class AgentLike(Protocol):
    @property
    def pk(self) -> object: ...
    @property
    def slug(self) -> str: ...


class _RunLike(Protocol):
    @property
    def agent(self) -> AgentLike: ...


# Who did it: a user (anonymous for a failed sign-in), an agent, a named system part
# ("policy", "load_agents ...") or None for the system itself.
Actor: TypeAlias = "AbstractBaseUser | AnonymousUser | AgentLike | str | None"


def _actor_fields(actor: Actor) -> tuple[str, str, str]:
    if actor is None:
        return AuditEvent.ActorType.SYSTEM, "", "system"
    if isinstance(actor, str):
        return AuditEvent.ActorType.SYSTEM, "", actor
    if actor.__class__.__name__ == "Agent":
        agent = cast(AgentLike, actor)
        return AuditEvent.ActorType.AGENT, str(agent.pk), f"agent:{agent.slug}"
    if getattr(actor, "is_anonymous", False):
        return AuditEvent.ActorType.USER, "", "anonymous"
    user = cast("AbstractBaseUser", actor)
    return AuditEvent.ActorType.USER, str(user.pk), user.get_username()


def _target_fields(target: Model | None) -> tuple[str, str, str]:
    if target is None:
        return "", "", ""
    return target._meta.label_lower, str(target.pk), str(target)


def _agent_and_run(target: Model | None) -> tuple[str, int | None]:
    if target is None:
        return "", None
    label = target._meta.label_lower
    if label == "agents.agent":
        return cast(AgentLike, target).slug, None
    if label == "agents.run":
        return cast(_RunLike, target).agent.slug, target.pk
    run = getattr(target, "run", None)
    if run is not None:
        return run.agent.slug, run.pk
    agent = getattr(target, "agent", None)
    return (agent.slug if agent is not None else ""), None


@contextmanager
def audited_atomic() -> Iterator[None]:
    """``transaction.atomic()`` for a change that writes audit events.

    Appending takes no lock: the event is inserted pending in the caller's transaction, and the
    sealer (audit/sealer.py) gives it its place in the chain once it is committed. Writers never
    wait for each other on the log; the name stays so that audited changes read as such.
    """
    with transaction.atomic():
        yield


_MAX_LENGTH: dict[str, int] = {
    field.name: field.max_length for field in AuditEvent._meta.concrete_fields if field.max_length is not None
}


def _field(value: str, name: str) -> str:
    # Stored values are what gets hashed, so cut to the column size here rather than let
    # one database truncate and another refuse.
    return value[: _MAX_LENGTH[name]]


def _event_fields(
    *, actor: Actor, action: str, target: Model | None, data: Mapping[str, object] | None
) -> dict[str, object]:
    """An event's stored values, masked and cut to their columns, with their content hash."""
    if not action or len(action) > _MAX_LENGTH["action"]:
        raise ValueError(f"Audit action {action!r} must be a dotted code of at most 100 characters.")
    actor_type, actor_id, actor_repr = _actor_fields(actor)
    target_type, target_id, target_repr = _target_fields(target)
    agent_slug, run_id = _agent_and_run(target)
    fields: dict[str, object] = {
        "actor_type": actor_type,
        "actor_id": _field(actor_id, "actor_id"),
        "actor_repr": _field(actor_repr, "actor_repr"),
        "action": action,
        "target_type": _field(target_type, "target_type"),
        "target_id": _field(target_id, "target_id"),
        "target_repr": _field(target_repr, "target_repr"),
        "agent_slug": _field(agent_slug, "agent_slug"),
        "run_id": run_id,
        "data": mask_secrets(json_value(data or {})),
        "created_at": timezone.now(),
    }
    return {**fields, "content_hash": content_hash(fields=fields)}


def audit_record(
    *, actor: Actor, action: str, target: Model | None = None, data: Mapping[str, object] | None = None
) -> AuditEvent:
    """Append one event to the log, inside the caller's transaction: pending until sealed.

    ``data`` is masked (secrets, card numbers, e-mail addresses) and turned into plain JSON
    before it is hashed and stored. The event commits or rolls back with the caller's change;
    ``sequence``, ``prev_hash`` and ``hash`` are filled by the sealer after commit.
    """
    event = AuditEvent(**_event_fields(actor=actor, action=action, target=target, data=data))
    # One INSERT without the ORM's statement building: appends are the log's hot path (every
    # step, decision and sign-in writes one), where compiling it cost a third of their CPU.
    rows_insert([event])
    return event


def audit_event(
    *, actor: Actor, action: str, target: Model | None = None, data: Mapping[str, object] | None = None
) -> AuditEvent:
    """An event as ``audit_record`` would append it, not yet saved: for ``audit_record_many``."""
    event = AuditEvent(**_event_fields(actor=actor, action=action, target=target, data=data))
    event._chain_append = True
    return event


def audit_record_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Append events made by ``audit_event``, in this order, with one INSERT inside the caller's
    transaction: what ``audit_record`` does for each, pending until sealed."""
    if not events:
        return events
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record_many() appends inside the caller's transaction (audited_atomic).")
    for event in events:
        # What AuditEvent.save() checks: new, made here, and without a place in the chain.
        if event.pk is not None or not getattr(event, "_chain_append", False):
            raise PermissionError("Audit events are append-only: make them with audit_event().")
        if event.sequence is not None or event.prev_hash is not None or event.hash is not None:
            raise PermissionError("Only the sealer gives an event its place in the chain.")
    rows_insert(events)
    return events
