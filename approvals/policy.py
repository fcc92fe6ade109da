"""The checkpoint policy: one pure function from a proposed tool call to a verdict and its reason.

Order of precedence (the first that decides wins):
1. the tool is not one of the agent's tools → block;
2. the user who started the run may not use the tool themselves → block (no confused deputy);
3. a business rule or guardrail with the effect ``block`` → block, at every level;
4. read-only tools → execute; ``ask_human`` → ask a person;
5. the autonomy level (per tool, capped at 4 for tools that are not low-risk and reversible):
   1 suggestion, 2 approval, 3 execute and review, 4 execute, 5 execute;
   at levels 3-5 a ``require_approval`` / ``require_two_approvals`` rule or a flagging
   guardrail turns the verdict into an approval; at level 2 such a rule can raise the
   number of approvals to two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from agents.models import Agent, AutonomyLevel
from agents.tools import Tool
from approvals.guardrails import GuardrailEffect, GuardrailHit, check_arguments
from approvals.models import ApprovalKind, BusinessRule, Verdict
from approvals.rules import field_value, rule_matches


@dataclass(frozen=True)
class RunContext:
    """Who the run acts for, as the policy needs it."""

    starter: Any  # a User, or None for a run started by the system
    run_id: int | None = None


@dataclass(frozen=True)
class CheckpointVerdict:
    verdict: str
    reason: str
    kind: str = ApprovalKind.APPROVAL
    required_approvals: int = 1
    level: int = 0
    rules: list[int] = field(default_factory=list)
    guardrails: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "kind": self.kind,
            "required_approvals": self.required_approvals,
            "level": self.level,
            "rules": self.rules,
            "guardrails": self.guardrails,
        }


LEVEL_NAMES = dict(AutonomyLevel.choices)


def effective_level(agent: Agent, tool: Tool) -> int:
    level = agent.level_for(tool.name)
    # Full autonomy is only for low-risk reversible tools, whatever the stored setting says.
    if level == AutonomyLevel.FULL and not tool.low_risk:
        return AutonomyLevel.GUARDRAILS
    return level


def rules_for(agent: Agent, tool_name: str) -> list[BusinessRule]:
    """The enabled rules on the tool, for every agent or this one, oldest first.

    Read at every checkpoint, never cached: an operator's edit applies to the next proposed
    call. Written out, not built by the ORM, which cost more than the database took to answer."""
    table = connection.ops.quote_name(BusinessRule._meta.db_table)
    return list(
        BusinessRule.objects.raw(
            f"SELECT * FROM {table} WHERE tool = %s AND enabled = %s "  # noqa: S608 - the model's own table
            "AND (agent_id IS NULL OR agent_id = %s) ORDER BY id",
            [tool_name, True, agent.pk],
        )
    )


def matching_rules(rules: Iterable[BusinessRule], arguments: dict[str, Any]) -> list[BusinessRule]:
    return [
        rule
        for rule in rules
        if rule_matches(operator=rule.operator, expected=rule.value, actual=field_value(arguments, rule.field))
    ]


def describe(rule: BusinessRule) -> str:
    text = f"rule #{rule.pk} ({rule.tool}.{rule.field} {rule.operator} {rule.value})"
    return f"{text}: {rule.note}" if rule.note else text


def checkpoint_verdict(
    *,
    agent: Agent,
    tool: Tool,
    arguments: dict[str, Any],
    context: RunContext,
    rules: list[BusinessRule] | None = None,
) -> CheckpointVerdict:
    level = effective_level(agent, tool)

    if tool.name not in agent.tools:
        return CheckpointVerdict(Verdict.BLOCK, f"{tool.name} is not one of {agent.slug}'s tools", level=level)

    if not tool.asks_human:
        starter = context.starter
        if starter is None or not starter.has_perm(tool.permission):
            who = starter.get_username() if starter is not None else "the system"
            return CheckpointVerdict(
                Verdict.BLOCK, f"the run acts for {who}, who lacks the permission {tool.permission}", level=level
            )

    matched = matching_rules(rules if rules is not None else rules_for(agent, tool.name), arguments)
    hits: list[GuardrailHit] = check_arguments(tool.name, arguments)
    hit_dicts = [hit.as_dict() for hit in hits]
    rule_ids = [rule.pk for rule in matched]

    blocking = [rule for rule in matched if rule.effect == BusinessRule.Effect.BLOCK]
    if blocking:
        return CheckpointVerdict(
            Verdict.BLOCK, "blocked by " + describe(blocking[0]), level=level, rules=rule_ids, guardrails=hit_dicts
        )
    blocking_hits = [hit for hit in hits if hit.effect == GuardrailEffect.BLOCK]
    if blocking_hits:
        return CheckpointVerdict(
            Verdict.BLOCK,
            f"blocked by guardrail {blocking_hits[0].name}: {blocking_hits[0].message}",
            level=level,
            rules=rule_ids,
            guardrails=hit_dicts,
        )

    if tool.asks_human:
        return CheckpointVerdict(
            Verdict.REQUIRE_APPROVAL, "the agent asks a person", kind=ApprovalKind.QUESTION, level=level
        )
    if tool.is_read_only:
        return CheckpointVerdict(Verdict.EXECUTE, "read-only tool", level=level, guardrails=hit_dicts)

    two = [rule for rule in matched if rule.effect == BusinessRule.Effect.REQUIRE_TWO_APPROVALS]
    one = [rule for rule in matched if rule.effect == BusinessRule.Effect.REQUIRE_APPROVAL]
    required = 2 if two else 1
    level_text = f"level {level} {LEVEL_NAMES[level]}"

    if level == AutonomyLevel.SUGGEST:
        return CheckpointVerdict(
            Verdict.REQUIRE_APPROVAL,
            f"{level_text}: a person acts on the suggestion",
            kind=ApprovalKind.SUGGESTION,
            level=level,
            rules=rule_ids,
            guardrails=hit_dicts,
        )

    if two or one:
        return CheckpointVerdict(
            Verdict.REQUIRE_APPROVAL,
            f"{level_text}; " + describe((two or one)[0]),
            required_approvals=required,
            level=level,
            rules=rule_ids,
            guardrails=hit_dicts,
        )
    if level == AutonomyLevel.PROPOSE:
        return CheckpointVerdict(
            Verdict.REQUIRE_APPROVAL,
            f"{level_text}: every action waits for approval",
            level=level,
            guardrails=hit_dicts,
        )
    if hits:
        return CheckpointVerdict(
            Verdict.REQUIRE_APPROVAL,
            f"{level_text}; guardrail {hits[0].name}: {hits[0].message}",
            level=level,
            guardrails=hit_dicts,
        )
    if level == AutonomyLevel.REVIEW_AFTER:
        return CheckpointVerdict(
            Verdict.EXECUTE_AND_REVIEW,
            f"{level_text}: runs now, reviewed afterwards",
            kind=ApprovalKind.REVIEW,
            level=level,
        )
    return CheckpointVerdict(Verdict.EXECUTE, f"{level_text}: no rule or guardrail hit", level=level)
