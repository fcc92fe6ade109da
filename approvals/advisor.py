"""The autonomy advisor: per agent and tool, whether the evidence of its last decisions says its
autonomy level could go up or should come down.

An outcome is a person's verdict on one of the tool's requests, or a proposal the policy blocked.
Over a tool's last ``ADVISOR_DECISIONS`` outcomes since its level last changed (the evidence of
another level says little about this one):

- unchanged: approved as proposed, done as suggested (level 1), reviewed ok (level 3);
- edited: approved with the reviewer's arguments; rejected: rejected, or a suggestion dismissed;
- incidents: reviews flagged after the fact, and blocked proposals.

Any incident suggests one level lower, and so do edits and rejections that reach
``ADVISOR_LOWER_SHARE`` of at least ``ADVISOR_LOWER_MIN_DECISIONS`` decisions. A full window of
decisions, no incident, and ``ADVISOR_RAISE_UNCHANGED_SHARE`` of them unchanged suggest one level
higher. Never below 1 or above 5, and never 5 for a tool that is not low-risk and reversible
(``Agent.clean`` refuses it, the policy caps it at 4). Only suggestions: applying one is the
operator's audited level change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import BooleanField, ExpressionWrapper, F, Q, Window
from django.db.models.functions import RowNumber

from agents.models import Agent, AutonomyLevel, ToolCall, ToolCallStatus
from agents.tools import Tool, registry
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus
from approvals.policy import LEVEL_NAMES, effective_level
from audit.models import AuditEvent

UNCHANGED = frozenset({ApprovalStatus.APPROVED, ApprovalStatus.DONE, ApprovalStatus.REVIEWED_OK})
REJECTED = frozenset({ApprovalStatus.REJECTED, ApprovalStatus.DISMISSED})
FLAGGED = ApprovalStatus.FLAGGED
# A person's verdict on a side effect; expired and cancelled requests had none.
DECIDED = frozenset({*UNCHANGED, *REJECTED, FLAGGED})


@dataclass(frozen=True)
class Suggestion:
    """One suggested level change for one tool, with the evidence it rests on."""

    tool: str
    current_level: int
    suggested_level: int
    direction: str  # "raise" or "lower"
    reason: str
    decisions: int
    unchanged: int
    edited: int
    rejected: int
    incidents: int
    incident_approval_ids: tuple[int, ...] = ()
    incident_tool_call_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Outcome:
    at: datetime
    status: str  # an ApprovalStatus, or "blocked"
    edited: bool = False
    approval_id: int | None = None
    tool_call_id: int | None = None


def _tools(agent: Agent) -> list[Tool]:
    """The agent's tools whose level decides anything: read-only tools run at every level, and
    questions to a person are no side effect."""
    tools = [registry[name] for name in agent.tools if name in registry]
    return [tool for tool in tools if not tool.is_read_only and not tool.asks_human]


def _level_changes(agents: list[Agent]) -> dict[tuple[int, str], datetime]:
    """When each agent's tool last changed level: its own override, or the agent's level while the
    tool follows it, or the agent's definition loaded with other levels. One query."""
    by_id = {str(agent.pk): agent for agent in agents}
    events = AuditEvent.objects.filter(
        target_type="agents.agent",
        target_id__in=list(by_id),
        action__in=["agents.agent.level_changed", "agents.agent.updated"],
    ).values_list("target_id", "action", "data", "created_at")
    since: dict[tuple[int, str], datetime] = {}
    for target_id, action, data, created_at in events.order_by("id"):
        agent = by_id[target_id]
        for tool in _tools(agent):
            if _changes_level(action=action, data=data, tool=tool.name, overridden=tool.name in agent.tool_levels):
                since[(agent.pk, tool.name)] = created_at
    return since


def _changes_level(*, action: str, data: Any, tool: str, overridden: bool) -> bool:
    if not isinstance(data, dict):
        return False
    if action == "agents.agent.updated":
        changes = data.get("changes") or {}
        return "autonomy_level" in changes or "tool_levels" in changes
    return data.get("tool") == tool or (not data.get("tool") and not overridden)


def _after(field: str, agent_field: str, floors: dict[tuple[int, str], datetime], agents: list[Agent]) -> Q:
    """Each agent's tools, each since its own level change."""
    condition = Q(pk__in=[])
    for agent in agents:
        for tool in _tools(agent):
            floor = floors.get((agent.pk, tool.name))
            since = {f"{field}__gt": floor} if floor else {}
            condition |= Q(**{agent_field: agent.pk, "tool": tool.name, **since})
    return condition


def _newest_first(field: str, agent_field: str) -> Window:
    """Numbers each agent's tool's rows, newest first: keeping ``n <= last`` keeps its last ones."""
    return Window(RowNumber(), partition_by=[F(agent_field), F("tool")], order_by=[F(field).desc(), F("id").desc()])


def _outcomes(agents: list[Agent], last: int) -> dict[tuple[int, str], list[_Outcome]]:
    """Each agent's tool's last ``last`` outcomes since its level changed, newest first: three
    queries, whatever the number of agents, a window function numbering each tool's rows."""
    floors = _level_changes(agents)
    decided = (
        ApprovalRequest.objects.filter(_after("decided_at", "agent_id", floors, agents), status__in=DECIDED)
        .exclude(kind=ApprovalKind.QUESTION)
        .annotate(
            edited=ExpressionWrapper(Q(decided_arguments__isnull=False), output_field=BooleanField()),
            n=_newest_first("decided_at", "agent_id"),
        )
        .filter(n__lte=last)
        .values_list("id", "agent_id", "tool", "status", "edited", "decided_at")
    )
    blocked = (
        ToolCall.objects.filter(_after("created_at", "run__agent_id", floors, agents), status=ToolCallStatus.BLOCKED)
        .annotate(n=_newest_first("created_at", "run__agent_id"))
        .filter(n__lte=last)
        .values_list("id", "run__agent_id", "tool", "created_at")
    )
    outcomes: dict[tuple[int, str], list[_Outcome]] = {}
    for approval_id, agent_id, tool_name, status, edited, decided_at in decided:
        if decided_at is not None:  # every decision has its time; the type does not know it
            outcome = _Outcome(at=decided_at, status=status, edited=edited, approval_id=approval_id)
            outcomes.setdefault((agent_id, tool_name), []).append(outcome)
    for tool_call_id, agent_id, tool_name, created_at in blocked:
        outcome = _Outcome(at=created_at, status=ToolCallStatus.BLOCKED, tool_call_id=tool_call_id)
        outcomes.setdefault((agent_id, tool_name), []).append(outcome)
    return {key: sorted(items, key=lambda o: o.at, reverse=True)[:last] for key, items in outcomes.items()}


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %"


def _suggestion(*, tool: Tool, level: int, outcomes: list[_Outcome], last: int) -> Suggestion | None:
    flagged = tuple(o.approval_id for o in outcomes if o.status == FLAGGED and o.approval_id is not None)
    blocked = tuple(o.tool_call_id for o in outcomes if o.tool_call_id is not None)
    decisions = sum(1 for o in outcomes if o.approval_id is not None)
    unchanged = sum(1 for o in outcomes if o.status in UNCHANGED and not o.edited)
    edited = sum(1 for o in outcomes if o.status in UNCHANGED and o.edited)
    rejected = sum(1 for o in outcomes if o.status in REJECTED)
    incidents = len(flagged) + len(blocked)
    evidence = {
        "decisions": decisions,
        "unchanged": unchanged,
        "edited": edited,
        "rejected": rejected,
        "incidents": incidents,
        "incident_approval_ids": flagged,
        "incident_tool_call_ids": blocked,
    }
    lower = level - 1
    if lower >= AutonomyLevel.SUGGEST and incidents:
        what = [f"{len(flagged)} flagged review{'s' * (len(flagged) != 1)}"] if flagged else []
        what += [f"{len(blocked)} blocked proposal{'s' * (len(blocked) != 1)}"] if blocked else []
        reason = f"{' and '.join(what)} in the last {len(outcomes)} outcomes"
        return _made(tool, level, lower, "lower", reason, evidence)
    said_no = edited + rejected
    if (
        lower >= AutonomyLevel.SUGGEST
        and decisions >= settings.ADVISOR_LOWER_MIN_DECISIONS
        and said_no / decisions >= settings.ADVISOR_LOWER_SHARE
    ):
        reason = f"{said_no} of the last {decisions} decisions edited or rejected ({_percent(said_no, decisions)})"
        return _made(tool, level, lower, "lower", reason, evidence)
    ceiling = AutonomyLevel.FULL if tool.low_risk else AutonomyLevel.GUARDRAILS
    if (
        level < ceiling
        and decisions >= last
        and not incidents
        and unchanged / decisions >= settings.ADVISOR_RAISE_UNCHANGED_SHARE
    ):
        reason = (
            f"{unchanged} of the last {decisions} decisions approved unchanged "
            f"({_percent(unchanged, decisions)}) and no incident"
        )
        return _made(tool, level, level + 1, "raise", reason, evidence)
    return None


def _made(tool: Tool, level: int, suggested: int, direction: str, reason: str, evidence: dict[str, Any]) -> Suggestion:
    text = f"{reason}: {direction} {tool.name} to level {suggested} ({LEVEL_NAMES[suggested]})."
    return Suggestion(
        tool=tool.name, current_level=level, suggested_level=suggested, direction=direction, reason=text, **evidence
    )


def advice_for_agents(*, agents: list[Agent], last: int | None = None) -> dict[int, list[Suggestion]]:
    """The suggestions for each agent's tools (by agent id) over each one's last ``last`` outcomes
    (``ADVISOR_DECISIONS`` by default), in the order of the agent's tools. Three queries."""
    last = last or settings.ADVISOR_DECISIONS
    judged = [agent for agent in agents if _tools(agent)]
    outcomes = _outcomes(judged, last) if judged else {}
    advice: dict[int, list[Suggestion]] = {agent.pk: [] for agent in agents}
    for agent in judged:
        for tool in _tools(agent):
            evidence = outcomes.get((agent.pk, tool.name), [])
            suggestion = _suggestion(tool=tool, level=effective_level(agent, tool), outcomes=evidence, last=last)
            if suggestion is not None:
                advice[agent.pk].append(suggestion)
    return advice


def advice_for(*, agent: Agent, last: int | None = None) -> list[Suggestion]:
    """The suggestions for ``agent``'s tools: ``advice_for_agents`` of one agent."""
    return advice_for_agents(agents=[agent], last=last)[agent.pk]
