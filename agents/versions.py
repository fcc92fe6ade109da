"""Agent versions: every change of an agent's behaviour is an immutable, numbered version.

``version_create`` is the one writer: agent definitions, the operator services (levels and
per-tool overrides), the admin and the console all call it. A version records its author, why,
and its diff from the version that was current when it was made; unless it is made as a
candidate it becomes current, and the agent row carries its behaviour (so pages, the advisor and
the policy read the current behaviour from the row as before).

A run records its version when it is created (``version_for_new_run``: the current one, or the
candidate for a deterministic canary share of run keys) and runs with that version's behaviour
(``behaviour_for_run``), not with the live row; only the kill switch (``enabled``) stays live.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Field, Max

from agents.models import Agent, AgentVersion, Run
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser, JSONObject
from config.errors import Conflict, DomainError

# What an agent does and how it decides: a change of any of these is a new version. Names,
# escalation, SLAs, webhooks, the input schema and the kill switch are not behaviour.
BEHAVIOUR_FIELDS = (
    "objective",
    "scope",
    "tools",
    "autonomy_level",
    "tool_levels",
    "reasoner",
    "playbook",
    "system_prompt",
    "llm_model",
    "temperature",
    "max_tokens",
    "tool_choice",
    "max_steps",
    "max_cost",
    "max_wall_seconds",
    "on_reject",
)
# A version made because the row's behaviour changed by a path that makes none (a shell, a raw save).
DRIFT_AUTHOR = "versions"


class VersionInvalid(DomainError):
    code = "invalid_version"


class VersionConflict(Conflict):
    code = "version_conflict"


def behaviour_snapshot(agent: Agent) -> JSONObject:
    """The agent's behaviour fields as plain JSON (a Decimal as its text)."""
    snapshot: JSONObject = {}
    for name in BEHAVIOUR_FIELDS:
        value = getattr(agent, name)
        snapshot[name] = str(value) if isinstance(value, Decimal) else value
    return snapshot


def behaviour_diff(old: JSONObject | None, new: JSONObject) -> JSONObject:
    """``{"field": {"old", "new"}}`` for each field that differs; from nothing: every field."""
    old = old or {}
    return {name: {"old": old.get(name), "new": value} for name, value in new.items() if old.get(name) != value}


def _apply(agent: Agent, behaviour: JSONObject) -> None:
    for name in BEHAVIOUR_FIELDS:
        if name in behaviour:
            field = Agent._meta.get_field(name)
            assert isinstance(field, Field)
            setattr(agent, name, field.to_python(behaviour[name]))


def _copy(agent: Agent, behaviour: JSONObject) -> Agent:
    """An Agent with the row's other fields and ``behaviour``; its ``save`` refuses (models.Agent)."""
    copy = Agent(**{field.attname: getattr(agent, field.attname) for field in Agent._meta.concrete_fields})
    copy._state.adding = False
    copy._state.db = agent._state.db
    _apply(copy, behaviour)
    copy.behaviour_copy = True
    return copy


def behaviour_of(version: AgentVersion) -> Agent:
    """An Agent that behaves as ``version``: the agent's row with that version's behaviour; not saveable."""
    return _copy(version.agent, version.behaviour)


def behaviour_for_run(run: Run) -> Agent:
    """What the run runs with: its version's behaviour on the live row (the kill switch stays live)."""
    if run.version_id is None:
        return run.agent
    assert run.version is not None
    return _copy(run.agent, run.version.behaviour)


def _author(author: AnyUser | str | None) -> tuple[User | None, str]:
    if isinstance(author, User):
        return author, author.get_username()
    if isinstance(author, str):
        return None, author
    return None, "system"


def behaviour_check(*, agent: Agent, behaviour: JSONObject) -> JSONObject:
    """``behaviour`` completed from the agent's current behaviour and validated as an agent; or VersionInvalid."""
    if not isinstance(behaviour, dict):
        raise VersionInvalid("A version's behaviour is a JSON object.")
    unknown = sorted(set(behaviour) - set(BEHAVIOUR_FIELDS))
    if unknown:
        raise VersionInvalid(
            "Only behaviour fields make a version.",
            details={"errors": {name: ["not a behaviour field"] for name in unknown}},
        )
    try:
        candidate = _copy(agent, behaviour)
        candidate.full_clean(exclude=[f.name for f in Agent._meta.concrete_fields if f.name not in BEHAVIOUR_FIELDS])
    except ValidationError as exc:
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"behaviour": exc.messages}
        raise VersionInvalid("This behaviour is not a valid agent.", details={"errors": errors}) from None
    return behaviour_snapshot(candidate)


def version_create(
    *,
    agent: Agent,
    author: AnyUser | str | None,
    reason: str,
    behaviour: JSONObject | None = None,
    candidate: bool = False,
) -> AgentVersion:
    """Write the next version of ``agent``: ``behaviour`` (validated), or without it the row's as
    saved. Unless ``candidate``, it becomes current and the row takes its behaviour; a current
    version equal to the behaviour is returned as it is (nothing changed, nothing is written)."""
    with audited_atomic():
        # Lock the row: two changes at once get numbers one after the other, each diffed from the other.
        agent = Agent.objects.select_for_update(no_key=True).select_related("current_version").get(pk=agent.pk)
        current = agent.current_version
        snapshot = behaviour_snapshot(agent) if behaviour is None else behaviour_check(agent=agent, behaviour=behaviour)
        if not candidate and current is not None and current.behaviour == snapshot:
            return current
        number = (AgentVersion.objects.filter(agent=agent).aggregate(n=Max("number"))["n"] or 0) + 1
        user, name = _author(author)
        version = AgentVersion.objects.create(
            agent=agent,
            number=number,
            behaviour=snapshot,
            diff=behaviour_diff(current.behaviour if current else None, snapshot),
            based_on=current,
            author=user,
            author_name=name[:150],
            reason=reason,
        )
        if candidate:
            agent.candidate_version = version
            agent.save(update_fields=["candidate_version", "updated_at"])
        else:
            _make_current(agent, version)
        audit_record(
            actor=author,
            action="agents.version.created",
            target=agent,
            data={
                "version": number,
                "based_on": current.number if current else None,
                "candidate": candidate,
                "diff": version.diff,
                "reason": reason,
            },
        )
    return version


def _make_current(agent: Agent, version: AgentVersion) -> None:
    """Inside the caller's transaction, the agent row locked: the row takes ``version``'s behaviour."""
    _apply(agent, version.behaviour)
    agent.current_version = version
    fields = [*BEHAVIOUR_FIELDS, "current_version", "updated_at"]
    if agent.candidate_version_id == version.pk:
        agent.candidate_version, agent.canary_share = None, 0
        fields += ["candidate_version", "canary_share"]
    agent.save(update_fields=fields)


def version_current(agent: Agent) -> AgentVersion:
    """Inside the caller's transaction, the agent row locked: its current version, made now when
    it has none or when its behaviour changed by a path that makes no version (recorded as such)."""
    current = agent.current_version
    if current is None or current.behaviour != behaviour_snapshot(agent):
        reason = "the first version" if current is None else "the agent's behaviour changed without a version"
        return version_create(agent=agent, author=DRIFT_AUTHOR, reason=reason)
    return current


def canary_bucket(*, agent: Agent, run_key: int) -> int:
    """0-99, the same for the same agent and run key on every worker and every day."""
    digest = hashlib.sha256(f"{agent.pk}:{run_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def version_for_new_run(agent: Agent, *, run_key: int) -> AgentVersion:
    """The version a new run takes: the candidate for ``canary_share`` % of run keys, else the current one."""
    current = version_current(agent)
    agent.refresh_from_db(fields=["current_version", "candidate_version", "canary_share"])
    if agent.candidate_version_id and canary_bucket(agent=agent, run_key=run_key) < agent.canary_share:
        assert agent.candidate_version is not None
        return agent.candidate_version
    return current


def version_rollback(*, agent: Agent, version: AgentVersion, user: AnyUser | None, reason: str) -> Agent:
    """Make an earlier version current again. Nothing new is written: the version keeps its
    number, its evaluation results and its live rates; the audit log records the move."""
    with audited_atomic():
        agent = Agent.objects.select_for_update(no_key=True).select_related("current_version").get(pk=agent.pk)
        if version.agent_id != agent.pk:
            raise VersionInvalid(f"Version {version.pk} is not a version of {agent.slug}.")
        old = agent.current_version
        if old is not None and old.pk == version.pk:
            raise VersionConflict(f"Version {version.number} is current already.")
        behaviour_check(agent=agent, behaviour=version.behaviour)
        _make_current(agent, version)
        audit_record(
            actor=user,
            action="agents.version.rolled_back",
            target=agent,
            data={
                "from": old.number if old else None,
                "to": version.number,
                "diff": behaviour_diff(old.behaviour if old else None, version.behaviour),
                "reason": reason,
            },
        )
    return agent


def versions_of(agent: Agent) -> list[AgentVersion]:
    """The agent's versions, newest first, with their authors (one query)."""
    return list(AgentVersion.objects.filter(agent=agent).select_related("author", "based_on").order_by("-number"))


__all__ = [
    "BEHAVIOUR_FIELDS",
    "VersionConflict",
    "VersionInvalid",
    "behaviour_check",
    "behaviour_diff",
    "behaviour_for_run",
    "behaviour_of",
    "behaviour_snapshot",
    "canary_bucket",
    "version_create",
    "version_current",
    "version_for_new_run",
    "version_rollback",
    "versions_of",
]
