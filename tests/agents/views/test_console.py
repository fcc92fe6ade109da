"""The operator console."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent, Run, RunStatus
from approvals.models import BusinessRule
from audit.models import AuditEvent
from tests.pages import SCRIPT, client_for, waiting_refund

pytestmark = pytest.mark.django_db


def test_console_is_for_operators_only(support_agent, operator, assigned_reviewer, outsider):
    console = client_for(operator).get("/console/")
    assert console.status_code == 200 and f"/console/agents/{support_agent.slug}/enabled/" in console.text
    for user in (assigned_reviewer, outsider):
        refused = client_for(user).get("/console/")
        assert refused.status_code == 403 and f"/console/agents/{support_agent.slug}/" not in refused.text
    response = client_for(assigned_reviewer).post(
        f"/console/agents/{support_agent.slug}/enabled/", {"enabled": "0", "reason": "x"}
    )
    assert response.status_code == 403
    assert Agent.objects.get(pk=support_agent.pk).enabled
    assert not AuditEvent.objects.filter(action="agents.agent.kill_switch").exists()


def test_console_changes_need_csrf(support_agent, operator):
    client = client_for(operator, csrf=True)
    response = client.post(f"/console/agents/{support_agent.slug}/enabled/", {"enabled": "0", "reason": "x"})
    assert response.status_code == 403
    assert client.post("/console/emergency-stop/", {"reason": "x", "confirm": "on"}).status_code == 403
    assert Agent.objects.get(pk=support_agent.pk).enabled


def test_console_lists_agents_in_a_fixed_number_of_queries(support_agent, starter, operator):
    waiting_refund(support_agent, starter)
    client = client_for(operator)
    client.get("/console/")
    with CaptureQueriesContext(connection) as few:
        page = client.get("/console/").text
    assert "Support agent" in page
    for index in range(4):
        Agent.objects.create(slug=f"extra-{index}", name=f"Extra {index}", objective="o", scope="s", tools=[])
    with CaptureQueriesContext(connection) as many:
        page = client.get("/console/").text
    assert "Extra 3" in page
    assert len(many) == len(few)


def test_level_change_needs_a_reason_and_is_audited(support_agent, operator):
    client = client_for(operator)
    url = f"/console/agents/{support_agent.slug}/level/"
    response = client.post(url, {"level": "3", "tool": "", "reason": ""})
    assert response.status_code == 400 and "Say why" in response.text
    assert Agent.objects.get(pk=support_agent.pk).autonomy_level == 2
    response = client.post(url, {"level": "3", "tool": "", "reason": "trusted now"})
    assert response.status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).autonomy_level == 3
    event = AuditEvent.objects.filter(action="agents.agent.level_changed").latest("id")
    assert event.data["reason"] == "trusted now" and event.data["old"] == 2 and event.data["new"] == 3
    # level 5 on an agent with risky tools is refused by the model's validation, shown inline
    response = client.post(url, {"level": "5", "tool": "", "reason": "go"})
    assert response.status_code == 400 and "Level 5" in response.text
    assert Agent.objects.get(pk=support_agent.pk).autonomy_level == 3
    assert AuditEvent.objects.filter(action="agents.agent.level_changed").count() == 1
    response = client.post(url, {"level": "1", "tool": "send_email", "reason": "careful with mail"})
    assert response.status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).tool_levels == {"send_email": 1}


def test_kill_switch_and_emergency_stop(support_agent, starter, operator):
    approval = waiting_refund(support_agent, starter)
    client = client_for(operator)
    url = f"/console/agents/{support_agent.slug}/enabled/"

    def switches() -> list[tuple[bool, str]]:
        events = AuditEvent.objects.filter(action="agents.agent.kill_switch").order_by("id")
        return [(event.data["new"], event.data["reason"]) for event in events]

    assert client.post(url, {"enabled": "0", "reason": ""}).status_code == 400
    assert Agent.objects.get(pk=support_agent.pk).enabled and switches() == []
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.WAITING
    assert client.post(url, {"enabled": "0", "reason": "misbehaving"}).status_code == 302
    assert not Agent.objects.get(pk=support_agent.pk).enabled
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.CANCELLED
    assert client.post(url, {"enabled": "1", "reason": "fixed"}).status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).enabled
    assert switches() == [(False, "misbehaving"), (True, "fixed")]
    assert client.post("/console/emergency-stop/", {"reason": "incident"}).status_code == 400  # not confirmed
    assert Agent.objects.get(pk=support_agent.pk).enabled and len(switches()) == 2
    response = client.post("/console/emergency-stop/", {"reason": "incident", "confirm": "on"}, follow=True)
    assert "Emergency stop: 1 agent disabled." in response.text
    assert not Agent.objects.filter(enabled=True).exists()


def test_business_rules_create_edit_delete_with_validation(support_agent, operator):
    client = client_for(operator)
    bad = {"tool": "issue_refund", "field": "nope", "operator": ">", "value": "abc", "effect": "block"}
    response = client.post("/console/rules/new/", bad)
    assert response.status_code == 400
    assert "has no argument" in response.text and "needs a number" in response.text
    good = {**bad, "field": "amount", "value": "900", "note": SCRIPT, "enabled": "on", "agent": support_agent.pk}
    response = client.post("/console/rules/new/", good)
    assert response.status_code == 302
    rule = BusinessRule.objects.get(field="amount", value=900)
    assert rule.agent == support_agent and rule.effect == "block"
    page = client.get("/console/").text
    assert SCRIPT not in page and "&lt;script&gt;" in page
    response = client.post(f"/console/rules/{rule.pk}/", {**good, "operator": "not_in", "value": "5"})
    assert response.status_code == 400 and "needs a list" in response.text
    response = client.post(f"/console/rules/{rule.pk}/", {**good, "value": "1200", "reason": "raise"})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.value == 1200
    assert client.post(f"/console/rules/{rule.pk}/delete/", {"reason": "obsolete"}).status_code == 302
    assert not BusinessRule.objects.filter(pk=rule.pk).exists()
    actions = set(AuditEvent.objects.filter(action__startswith="approvals.rule.").values_list("action", flat=True))
    assert actions == {"approvals.rule.created", "approvals.rule.changed", "approvals.rule.deleted"}


def test_reviewer_assignments_grant_and_revoke(support_agent, operator, reviewer):
    client = client_for(operator)
    data = {"reviewer": reviewer.username, "agent": support_agent.slug, "granted": "1", "reason": "on call"}
    assert client.post("/console/assignments/", data).status_code == 302
    assert type(reviewer).objects.get(pk=reviewer.pk).has_perm("agents.review_agent", support_agent)
    page = client.get("/console/").text
    assert f"Revoke {reviewer.username} on {support_agent.name}" in page
    assert client.post("/console/assignments/", {**data, "granted": "0"}).status_code == 302
    assert not type(reviewer).objects.get(pk=reviewer.pk).has_perm("agents.review_agent", support_agent)
    events = AuditEvent.objects.filter(action__startswith="approvals.reviewer.").order_by("id")
    assert [(event.action, event.data["reviewer"], event.actor_id) for event in events] == [
        ("approvals.reviewer.assigned", reviewer.username, str(operator.pk)),
        ("approvals.reviewer.revoked", reviewer.username, str(operator.pk)),
    ]
    assert client.post("/console/assignments/", {**data, "reviewer": "ghost"}).status_code == 400
    assert AuditEvent.objects.filter(action__startswith="approvals.reviewer.").count() == 2


def test_an_operator_cannot_grant_themselves_review(support_agent, operator):
    client = client_for(operator)
    data = {"reviewer": operator.username, "agent": support_agent.slug, "granted": "1", "reason": "short-staffed"}
    response = client.post("/console/assignments/", data)
    assert response.status_code == 403
    assert "Nobody grants review rights to themselves" in response.text  # the console page shows why
    assert not type(operator).objects.get(pk=operator.pk).has_perm("agents.review_agent", support_agent)
    assert not AuditEvent.objects.filter(action__startswith="approvals.reviewer.").exists()
