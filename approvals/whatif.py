"""Policy what-if: the stored proposals of the last days replayed under a proposed policy.

Every proposal an agent made is in the ledger (ToolCall, with the arguments as proposed kept
on its approval request when a reviewer edited them). Each is judged twice by the real
``checkpoint_verdict``: with the policy as it is and with the proposed change, an unsaved copy
of the agent (a level, a tool override) or an in-memory list of rules (one added, changed or
removed). Nothing is written. The replay counts what would have waited, run, run and been
reviewed, or been blocked, and lists the proposals that reviewers turned down or corrected
(rejected, edited, dismissed, flagged) and that would now run unreviewed.

The starter's permissions are today's, as the rules are: a replay answers "what would this
policy do to this traffic", not "what did happen" (the recorded verdicts say that).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Prefetch
from django.utils import timezone

from agents.models import Agent, ToolCall
from agents.tools import FINAL_ANSWER, registry
from approvals.models import ApprovalRequest, BusinessRule, Decision, DecisionVerdict, Verdict
from approvals.policy import RunContext, checkpoint_verdict

MAX_DAYS = 90
MAX_CALLS = 20000
VERDICTS = (Verdict.REQUIRE_APPROVAL, Verdict.EXECUTE, Verdict.EXECUTE_AND_REVIEW, Verdict.BLOCK)
VERDICT_WORDS = {
    Verdict.REQUIRE_APPROVAL: "would wait",
    Verdict.EXECUTE: "would run",
    Verdict.EXECUTE_AND_REVIEW: "would run, then be reviewed",
    Verdict.BLOCK: "would be blocked",
}
# What a reviewer said that means "not as proposed".
SAID_NO = {
    DecisionVerdict.REJECT: "rejected",
    DecisionVerdict.EDIT: "edited",
    DecisionVerdict.DISMISS: "dismissed",
    DecisionVerdict.FLAG: "flagged",
}


@dataclass(frozen=True)
class PolicyChange:
    """One proposed change: a level (for the agent, or with ``tool`` for one tool), a rule to
    add (no pk) or change (its pk), or a rule to remove."""

    level: int | None = None
    tool: str = ""
    rule: BusinessRule | None = None
    remove_rule_id: int | None = None

    def describe(self) -> str:
        if self.level is not None:
            return f"{self.tool} at level {self.level}" if self.tool else f"agent level {self.level}"
        if self.rule is not None:
            verb = f"change rule #{self.rule.pk}" if self.rule.pk else "add rule"
            return f"{verb}: {self.rule}"
        return f"remove rule #{self.remove_rule_id}"


@dataclass(frozen=True)
class TurnedDown:
    """A past proposal a reviewer turned down that would now run unreviewed."""

    tool_call_id: int
    run_id: int
    tool: str
    arguments: Any
    decision: str
    reviewer: str
    comment: str
    at: Any
    before: str
    after: str


@dataclass
class Replay:
    change: str
    days: int
    proposals: int = 0
    truncated: bool = False
    recorded: Counter[str] = field(default_factory=Counter)
    before: Counter[str] = field(default_factory=Counter)
    after: Counter[str] = field(default_factory=Counter)
    changed: int = 0
    turned_down: list[TurnedDown] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "verdict": verdict,
                "words": VERDICT_WORDS[verdict],
                "recorded": self.recorded[verdict],
                "before": self.before[verdict],
                "after": self.after[verdict],
                "delta": self.after[verdict] - self.before[verdict],
            }
            for verdict in VERDICTS
        ]


def proposed_agent(agent: Agent, change: PolicyChange) -> Agent:
    """An unsaved copy of ``agent`` with the change's level: never saved."""
    copied = copy.copy(agent)
    copied.tool_levels = dict(agent.tool_levels)
    if change.level is not None and change.tool:
        copied.tool_levels[change.tool] = change.level
    elif change.level is not None:
        copied.autonomy_level = change.level
    return copied


def proposed_rules(rules: list[BusinessRule], change: PolicyChange) -> list[BusinessRule]:
    kept = [rule for rule in rules if rule.pk not in (change.remove_rule_id, getattr(change.rule, "pk", None))]
    if change.rule is not None and change.rule.enabled:
        kept.append(change.rule)
    return sorted(kept, key=lambda rule: (rule.pk is None, rule.pk or 0))


def whatif_replay(*, agent: Agent, change: PolicyChange, days: int) -> Replay:
    """The agent's proposals of the last ``days`` days (newest ``MAX_CALLS``) judged with the
    policy as it is and as proposed. Reads only: four queries, plus the starters' permissions."""
    days = max(1, min(days, MAX_DAYS))
    replay = Replay(change=change.describe(), days=days)
    rules = [
        rule for rule in BusinessRule.objects.filter(enabled=True).order_by("id") if rule.agent_id in (None, agent.pk)
    ]
    after_agent = proposed_agent(agent, change)
    after_rules = [rule for rule in proposed_rules(rules, change) if rule.agent_id in (None, agent.pk)]
    starters: dict[int | None, Any] = {}
    for call in _calls(agent, days, replay):
        tool = registry.get(call.tool)
        if tool is None:
            continue
        approval = _approval(call)
        arguments = approval.arguments if approval is not None else call.arguments
        starter = starters.setdefault(call.run.started_by_id, call.run.started_by)
        context = RunContext(starter=starter, run_id=call.run_id)
        before = checkpoint_verdict(
            agent=agent, tool=tool, arguments=arguments, context=context, rules=_for(rules, tool.name)
        )
        after = checkpoint_verdict(
            agent=after_agent, tool=tool, arguments=arguments, context=context, rules=_for(after_rules, tool.name)
        )
        replay.proposals += 1
        replay.recorded[call.verdict] += 1
        replay.before[before.verdict] += 1
        replay.after[after.verdict] += 1
        replay.changed += before.verdict != after.verdict
        if after.verdict == Verdict.EXECUTE and approval is not None:
            said_no = _said_no(approval)
            if said_no is not None:
                replay.turned_down.append(_turned_down(call, approval, said_no, before.verdict, after.verdict))
    return replay


def _calls(agent: Agent, days: int, replay: Replay) -> list[ToolCall]:
    since = timezone.now() - timedelta(days=days)
    decisions = Prefetch("approval__decisions", queryset=Decision.objects.select_related("reviewer").order_by("id"))
    calls = list(
        ToolCall.objects.filter(run__agent=agent, created_at__gte=since)
        .exclude(tool=FINAL_ANSWER)
        .select_related("run__started_by", "approval")
        .prefetch_related(decisions)
        .order_by("-created_at", "-id")[: MAX_CALLS + 1]
    )
    replay.truncated = len(calls) > MAX_CALLS
    return calls[:MAX_CALLS]


def _for(rules: list[BusinessRule], tool: str) -> list[BusinessRule]:
    return [rule for rule in rules if rule.tool == tool]


def _approval(call: ToolCall) -> ApprovalRequest | None:
    try:
        return call.approval
    except ApprovalRequest.DoesNotExist:
        return None


def _said_no(approval: ApprovalRequest) -> Decision | None:
    return next((d for d in approval.decisions.all() if d.verdict in SAID_NO), None)


def _turned_down(call: ToolCall, approval: ApprovalRequest, decision: Decision, before: str, after: str) -> TurnedDown:
    return TurnedDown(
        tool_call_id=call.pk,
        run_id=call.run_id,
        tool=call.tool,
        arguments=approval.arguments,
        decision=SAID_NO[DecisionVerdict(decision.verdict)],
        reviewer=decision.reviewer.get_username(),
        comment=decision.comment,
        at=decision.created_at,
        before=before,
        after=after,
    )
