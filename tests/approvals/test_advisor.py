"""The autonomy advisor: raise after a full window of unchanged approvals, lower after incidents,
never past what the policy allows. Every decision goes through the decision service."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from agents import runtime
from agents.models import Agent, Run, Ticket, ToolCall, ToolCallStatus
from agents.operations import agent_set_level
from approvals.advisor import advice_for, advice_for_agents
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalKind, ApprovalRequest, BusinessRule
from tests.pages import waiting_refund

pytestmark = pytest.mark.django_db


def refunds_approved(agent: Agent, starter, reviewer, count: int, *, amount: int = 120) -> list[ApprovalRequest]:
    decided = []
    for _ in range(count):
        approval = waiting_refund(agent, starter, amount=amount)
        decided.append(approval_request_decide(approval=approval, reviewer=reviewer, verdict="approve"))
    return decided


def by_tool(agent: Agent) -> dict[str, object]:
    return {suggestion.tool: suggestion for suggestion in advice_for(agent=Agent.objects.get(pk=agent.pk))}


def blocked_refund(agent: Agent, starter) -> ToolCall:
    """A refund over the seeded hard cap: the policy blocks the proposal."""
    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=agent,
        user=starter,
        payload={"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": 6000, "currency": "USD"},
    )
    runtime.run_advance(run_id=run.pk)
    return ToolCall.objects.get(run=run, tool="issue_refund", status=ToolCallStatus.BLOCKED)


def test_raises_after_fifty_unchanged_approvals_and_not_after_forty_nine(support_agent, starter, assigned_reviewer):
    refunds_approved(support_agent, starter, assigned_reviewer, 49)
    assert "issue_refund" not in by_tool(support_agent)

    refunds_approved(support_agent, starter, assigned_reviewer, 1)
    suggestion = by_tool(support_agent)["issue_refund"]
    assert (suggestion.direction, suggestion.current_level, suggestion.suggested_level) == ("raise", 2, 3)
    assert (suggestion.decisions, suggestion.unchanged, suggestion.edited, suggestion.rejected) == (50, 50, 0, 0)
    assert suggestion.incidents == 0 and "50 of the last 50" in suggestion.reason

    # Applied, the level's evidence starts again: the approvals at level 2 say nothing of level 3.
    agent_set_level(agent=support_agent, level=3, user=starter, reason=suggestion.reason, tool="issue_refund")
    assert "issue_refund" not in by_tool(support_agent)


def test_an_incident_in_the_window_suggests_lowering_instead(support_agent, starter, assigned_reviewer):
    refunds_approved(support_agent, starter, assigned_reviewer, 49)
    blocked = blocked_refund(support_agent, starter)
    refunds_approved(support_agent, starter, assigned_reviewer, 1)
    suggestion = by_tool(support_agent)["issue_refund"]
    assert (suggestion.direction, suggestion.suggested_level) == ("lower", 1)
    assert suggestion.incident_tool_call_ids == (blocked.pk,) and suggestion.incidents == 1
    assert suggestion.decisions == 49 and "1 blocked proposal" in suggestion.reason


def test_lowers_after_a_flagged_review(support_agent, starter, assigned_reviewer):
    agent_set_level(agent=support_agent, level=3, user=starter, reason="reviewed afterwards", tool="issue_refund")
    ok, flagged = (waiting_refund(support_agent, starter) for _ in range(2))
    assert ok.kind == flagged.kind == ApprovalKind.REVIEW
    approval_request_decide(approval=ok, reviewer=assigned_reviewer, verdict="ok")
    approval_request_decide(approval=flagged, reviewer=assigned_reviewer, verdict="flag", comment="wrong customer")
    suggestion = by_tool(support_agent)["issue_refund"]
    assert (suggestion.direction, suggestion.current_level, suggestion.suggested_level) == ("lower", 3, 2)
    assert suggestion.incident_approval_ids == (flagged.pk,)
    assert (suggestion.decisions, suggestion.unchanged, suggestion.incidents) == (2, 1, 1)
    assert "1 flagged review" in suggestion.reason


def test_edits_and_rejections_suggest_lowering(support_agent, starter, assigned_reviewer, settings):
    settings.ADVISOR_LOWER_MIN_DECISIONS = 10
    settings.ADVISOR_LOWER_SHARE = 0.2
    refunds_approved(support_agent, starter, assigned_reviewer, 8)
    edited = waiting_refund(support_agent, starter)
    arguments = {**edited.arguments, "amount": 100}
    approval_request_decide(approval=edited, reviewer=assigned_reviewer, verdict="edit", arguments=arguments)
    assert "issue_refund" not in by_tool(support_agent)  # 9 decisions: too few to judge
    rejected = waiting_refund(support_agent, starter)
    approval_request_decide(approval=rejected, reviewer=assigned_reviewer, verdict="reject", comment="no order")
    suggestion = by_tool(support_agent)["issue_refund"]
    assert (suggestion.direction, suggestion.suggested_level) == ("lower", 1)
    assert (suggestion.decisions, suggestion.unchanged, suggestion.edited, suggestion.rejected) == (10, 8, 1, 1)


def test_no_level_five_for_a_risky_tool_but_for_a_low_risk_one(support_agent, starter, assigned_reviewer, settings):
    settings.ADVISOR_DECISIONS = 5
    agent_set_level(agent=support_agent, level=4, user=starter, reason="guardrails")
    BusinessRule.objects.create(
        tool="update_ticket", field="status", operator="==", value="solved", effect="require_approval"
    )
    # Over $500 a refund waits even at level 4 (the seeded rule): approved unchanged, five times.
    refunds_approved(support_agent, starter, assigned_reviewer, 5, amount=600)
    for run in Run.objects.filter(agent=support_agent):
        runtime.run_advance(run_id=run.pk)
    for approval in ApprovalRequest.objects.filter(tool="update_ticket", status="pending"):
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")

    advice = by_tool(support_agent)
    assert "issue_refund" not in advice  # financial: 4 is as far as it goes
    ticket = advice["update_ticket"]  # low-risk and reversible: 5 is allowed
    assert (ticket.direction, ticket.current_level, ticket.suggested_level, ticket.decisions) == ("raise", 4, 5, 5)
    agent_set_level(agent=support_agent, level=5, user=starter, reason=ticket.reason, tool="update_ticket")
    assert Agent.objects.get(pk=support_agent.pk).tool_levels == {"update_ticket": 5}


def test_advice_takes_three_queries_for_any_number_of_agents(support_agent, starter, assigned_reviewer):
    refunds_approved(support_agent, starter, assigned_reviewer, 3)
    agents = [Agent.objects.get(pk=support_agent.pk)] + [
        Agent.objects.create(slug=f"extra-{i}", name=f"Extra {i}", objective="o", scope="s", tools=["update_ticket"])
        for i in range(3)
    ]
    with CaptureQueriesContext(connection) as queries:
        advice = advice_for_agents(agents=agents, last=10)
    assert len(queries) == 3 and set(advice) == {agent.pk for agent in agents}


def test_the_advice_api_is_for_operators(support_agent, starter, assigned_reviewer, operator):
    refunds_approved(support_agent, starter, assigned_reviewer, 5)
    client = APIClient()
    client.force_authenticate(operator)
    [suggestion] = client.get("/api/v1/agents/support/advice/?last=5").json()
    assert (suggestion["tool"], suggestion["direction"], suggestion["suggested_level"]) == ("issue_refund", "raise", 3)
    assert suggestion["incident_approval_ids"] == [] and suggestion["unchanged"] == 5
    assert client.get("/api/v1/agents/support/advice/").json() == []  # 5 of the default 50: too few
    assert client.get("/api/v1/agents/support/advice/?last=0").status_code == 400
    assert client.get("/api/v1/agents/nope/advice/").status_code == 404
    client.force_authenticate(assigned_reviewer)
    assert client.get("/api/v1/agents/support/advice/").status_code == 403
