"""The operator pages of oversight: reviewer analytics with the rubber-stamp flag, and the
advisor's suggestions on the console, applied through the audited level change."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from guardian.shortcuts import assign_perm

from agents.models import Agent
from audit.models import AuditEvent
from tests.approvals.test_advisor import refunds_approved
from tests.approvals.test_analytics import careful_reviewer_script, fast_reviewer_script
from tests.pages import SCRIPT, client_for, csrf_token

pytestmark = pytest.mark.django_db


def apply_form(page: str, *, slug: str, tool: str) -> tuple[str, dict[str, str]]:
    """The action and fields of the console's apply form of ``slug``'s suggestion for ``tool``."""
    row = re.search(rf'<tr class="suggestion [a-z]+" data-slug="{slug}" data-tool="{tool}">(.*?)</tr>', page, re.S)
    assert row, f"no suggestion for {tool} on the page"
    action = re.search(r'<form method="post" action="([^"]+)" class="apply-advice">', row.group(1))
    fields = re.findall(r'<input type="(?:hidden|text)" name="(\w+)"[^>]*? value="([^"]*)"', row.group(1))
    assert action
    return action.group(1), {name: html.unescape(value) for name, value in fields if name != "csrfmiddlewaretoken"}


def test_reviewer_analytics_flag_the_rubber_stamp(support_agent, starter, assigned_reviewer, other_reviewer, operator):
    assign_perm("review_agent", other_reviewer, support_agent)
    assigned_reviewer.first_name = SCRIPT
    assigned_reviewer.save(update_fields=["first_name"])
    fast_reviewer_script(support_agent, starter, assigned_reviewer, 25)
    careful_reviewer_script(support_agent, starter, other_reviewer, 25)

    page = client_for(operator).get("/console/reviewers/")
    assert page.status_code == 200
    text = page.text
    fast_row = re.search(rf'<tr class="reviewer-row rubber-stamp" data-reviewer="{assigned_reviewer.pk}"', text)
    assert fast_row and 'id="rubber-stamp-count">1 reviewer looks like a rubber stamp' in text
    assert f'<tr class="reviewer-row" data-reviewer="{other_reviewer.pk}" data-agent="support">' in text
    assert SCRIPT not in text and html.escape(SCRIPT) in text
    assert 'href="/console/reviewers/"' in client_for(operator).get("/console/").text


def test_reviewer_analytics_are_for_operators_only(support_agent, starter, assigned_reviewer, outsider, operator):
    fast_reviewer_script(support_agent, starter, assigned_reviewer, 3)
    for user in (assigned_reviewer, outsider):
        refused = client_for(user).get("/console/reviewers/")
        assert refused.status_code == 403 and "reviewer-row" not in refused.text
    anonymous = Client().get("/console/reviewers/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert client_for(operator).post("/console/reviewers/").status_code == 405


def test_a_suggestion_applied_on_the_console_changes_the_level_and_is_audited(
    support_agent, starter, assigned_reviewer, operator, settings
):
    settings.ADVISOR_DECISIONS = 5
    refunds_approved(support_agent, starter, assigned_reviewer, 5)
    client = client_for(operator, csrf=True)
    page = client.get("/console/").text
    action, fields = apply_form(page, slug="support", tool="issue_refund")
    assert action == "/console/agents/support/level/" and fields["level"] == "3" and fields["tool"] == "issue_refund"
    assert fields["reason"].startswith("Advisor: 5 of the last 5 decisions approved unchanged")
    assert "5 decisions: 5 unchanged, 0 edited, 0 rejected; 0 incidents" in page

    assert client.post(action, fields).status_code == 403  # no CSRF token: nothing changes
    assert Agent.objects.get(pk=support_agent.pk).tool_levels == {}
    response = client.post(action, {**fields, "csrfmiddlewaretoken": csrf_token(client, "/console/")})
    assert response.status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).tool_levels == {"issue_refund": 3}
    event = AuditEvent.objects.filter(action="agents.agent.level_changed").latest("id")
    assert event.actor_id == str(operator.pk)
    assert (event.data["tool"], event.data["old"], event.data["new"]) == ("issue_refund", 2, 3)
    assert event.data["reason"] == fields["reason"]
    assert 'data-tool="issue_refund"' not in client.get("/console/").text  # its evidence starts again


def test_only_operators_apply_a_suggestion(support_agent, starter, assigned_reviewer, outsider, operator, settings):
    settings.ADVISOR_DECISIONS = 5
    refunds_approved(support_agent, starter, assigned_reviewer, 5)
    action, fields = apply_form(client_for(operator).get("/console/").text, slug="support", tool="issue_refund")
    for user in (assigned_reviewer, outsider):
        assert client_for(user).post(action, fields).status_code == 403
    assert Agent.objects.get(pk=support_agent.pk).tool_levels == {}
    assert not AuditEvent.objects.filter(action="agents.agent.level_changed").exists()
