"""Agent definitions (the demo's, or YAML and JSON files): validated, saved and audited."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from agents.models import Agent
from agents.runtime.lifecycle import input_schema_problems, runs_stop_for_agent
from agents.versions import BEHAVIOUR_FIELDS, version_create
from audit.services import audit_record, audited_atomic


def agent_upsert(
    definition: dict[str, Any], *, owner: User | None = None, actor: User | str = "agent definitions"
) -> tuple[Agent, bool]:
    """Create or update an agent from a definition; validated before anything is saved, and
    audited (created, or the fields that changed with their old and new values). A change of
    behaviour is a new version (agents.versions)."""
    fields = {key: value for key, value in definition.items() if key != "slug"}
    known = {field.name for field in Agent._meta.get_fields()}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValidationError({"__all__": [f"Unknown fields: {', '.join(unknown)}."]})
    schema_problems = input_schema_problems(fields.get("input_schema"))
    if schema_problems:
        raise ValidationError({"input_schema": schema_problems})
    with audited_atomic():
        agent = Agent.objects.select_for_update(no_key=True).filter(slug=definition["slug"]).first()
        created = agent is None
        if agent is None:
            agent = Agent(slug=definition["slug"], owner=owner)
        changes = {
            key: {"old": getattr(agent, key, None), "new": value}
            for key, value in fields.items()
            if created or getattr(agent, key, None) != value
        }
        for key, value in fields.items():
            setattr(agent, key, value)
        agent.full_clean()
        agent.save()
        if created:
            audit_record(actor=actor, action="agents.agent.created", target=agent, data={"definition": fields})
        elif changes:
            audit_record(actor=actor, action="agents.agent.updated", target=agent, data={"changes": changes})
            if "enabled" in changes and not agent.enabled:
                # A definition that disables the agent is a kill switch like any other.
                runs_stop_for_agent(agent=agent, user=None)
        if created or set(changes) & set(BEHAVIOUR_FIELDS):
            reason = "created from its definition" if created else "its definition changed"
            version_create(agent=agent, author=actor, reason=reason)
    return agent, created
