"""The versions page in headless Chromium: a candidate made in the page, its diff, a canary share,
a rollback of the candidate and of the current version. Screenshots in tests/e2e/artifacts/."""

from __future__ import annotations

import json

import pytest

from agents.models import Agent, AgentVersion
from agents.operations import agent_set_level
from audit.models import AuditEvent
from tests.e2e import test_inbox as inbox_tests
from tests.e2e.test_inbox import shot

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

pages = inbox_tests.pages
server = inbox_tests.server
team = inbox_tests.team


def test_the_versions_page_shows_diffs_and_runs_a_canary_and_a_rollback(pages, team):
    from playwright.sync_api import expect

    agent_set_level(agent=team.agent, level=3, user=team.starter, reason="a month of clean refunds")
    page = pages.open(team.starter, f"/console/agents/{team.agent.slug}/versions/")
    expect(page.locator("#current-version")).to_have_text("v2")
    v2 = page.locator("#version-2")
    expect(v2.locator(".badge")).to_have_text("current")
    expect(v2.locator("tr[data-field=autonomy_level] pre.old")).to_have_text("2")
    expect(v2.locator("tr[data-field=autonomy_level] pre.new")).to_have_text("3")
    expect(v2).to_contain_text("a month of clean refunds")

    # A candidate made in the page: a new system prompt and a smaller step budget.
    behaviour = json.dumps({"system_prompt": "Answer in two sentences <at most>.", "max_steps": 8})
    page.locator(".candidate-form textarea[name=behaviour]").fill(behaviour)
    page.locator(".candidate-form input[name=reason]").fill("shorter answers")
    page.get_by_role("button", name="Make candidate").click()
    expect(page.locator(".messages")).to_contain_text("Version 3 made as the candidate")
    page.locator(".canary-start input[name=share]").fill("10")
    page.locator(".canary-start input[name=reason]").fill("try it on a tenth of new runs")
    page.get_by_role("button", name="Start canary").click()
    expect(page.locator("#candidate-version")).to_have_text("v3 for 10 % of new runs")
    v3 = page.locator("#version-3")
    expect(v3.locator(".candidate-badge")).to_have_text("candidate · 10 %")
    expect(v3.locator("tr[data-field=system_prompt] pre.new")).to_have_text('"Answer in two sentences <at most>."')
    expect(page.locator("#comparison")).to_contain_text("Rejection rate")
    shot(page, "versions-canary")

    # Roll the candidate back by hand, then make version 1 current again.
    page.locator(".canary-decision input[name=reason]").fill("not now")
    page.locator("#canary-rollback").click()
    expect(page.locator("#candidate-version")).to_have_text("none")
    v1 = page.locator("#version-1")
    v1.locator("input[name=reason]").fill("back to approvals before refunds")
    v1.get_by_role("button", name="Make v1 current").click()
    expect(page.locator("#current-version")).to_have_text("v1")
    expect(page.locator("#version-1 .badge")).to_have_text("current")
    shot(page, "versions-after-rollback")

    agent = Agent.objects.get(pk=team.agent.pk)
    assert agent.current_version.number == 1 and agent.autonomy_level == 2 and agent.candidate_version is None
    assert AgentVersion.objects.filter(agent=agent).count() == 3
    actions = list(
        AuditEvent.objects.filter(action__startswith="agents.version.").order_by("id").values_list("action", flat=True)
    )
    assert actions[-4:] == [
        "agents.version.created",
        "agents.version.canary_started",
        "agents.version.canary_rolled_back",
        "agents.version.rolled_back",
    ]
