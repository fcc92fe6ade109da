"""Operator settings: autonomy levels, the kill switch, the emergency stop.

One service each; the console, the API and the admin all call these, so every change is
validated the same way and audited with who, old, new and why.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from agents.models import Agent
from agents.runtime.lifecycle import runs_stop_for_agent
from agents.versions import version_create
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser
from config.errors import DomainError


def agent_set_enabled(*, agent: Agent, enabled: bool, user: AnyUser | None, reason: str) -> Agent:
    """The kill switch: off, no new runs start and the agent's runs stop."""
    with audited_atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        if agent.enabled == enabled:
            return agent
        agent.enabled = enabled
        agent.save(update_fields=["enabled", "updated_at"])
        audit_record(
            actor=user,
            action="agents.agent.kill_switch",
            target=agent,
            data={"old": not enabled, "new": enabled, "reason": reason},
        )
        if not enabled:
            runs_stop_for_agent(agent=agent, user=user)
    return agent


def agents_emergency_stop(*, user: AnyUser | None, reason: str) -> int:
    """Every enabled agent's kill switch at once. Returns how many were stopped."""
    stopped = 0
    for agent in Agent.objects.filter(enabled=True):
        agent_set_enabled(agent=agent, enabled=False, user=user, reason=f"emergency stop: {reason}")
        stopped += 1
    return stopped


def agent_set_level(
    *, agent: Agent, level: int | None, user: AnyUser | None, reason: str, tool: str | None = None
) -> Agent:
    """The agent's autonomy level, or with ``tool`` its override for that tool (``None`` removes
    the override)."""
    with audited_atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        old: int | None
        if tool:
            # Setting: the level the tool ran at until now; removing: the override that goes.
            old = agent.level_for(tool) if level is not None else agent.tool_levels.get(tool)
            levels = dict(agent.tool_levels)
            if level is None:
                levels.pop(tool, None)
            else:
                levels[tool] = level
            agent.tool_levels = levels
        else:
            if level is None:
                raise DomainError("An agent's autonomy level is a number from 1 to 5.")
            old = agent.autonomy_level
            agent.autonomy_level = level
        if old == level:
            return agent
        try:
            agent.full_clean()
        except ValidationError as exc:
            raise DomainError("This autonomy level is not allowed.", details={"errors": exc.message_dict}) from None
        agent.save(update_fields=["autonomy_level", "tool_levels", "updated_at"])
        audit_record(
            actor=user,
            action="agents.agent.level_changed",
            target=agent,
            data={"tool": tool, "old": old, "new": level, "reason": reason},
        )
        version_create(agent=agent, author=user, reason=reason)
    return agent
