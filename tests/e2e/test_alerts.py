"""The alert banner in headless Chromium against the real ASGI server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.models import Run, RunStatus
from approvals.alerts import alerts_evaluate
from approvals.models import AlertMetric, AlertRule
from tests.e2e import test_inbox as inbox_tests
from tests.e2e.test_inbox import shot

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

pages = inbox_tests.pages
server = inbox_tests.server
team = inbox_tests.team

NAME = "<img src=x onerror=alert(1)> long runs"


def test_a_firing_alert_shows_to_the_agents_reviewers_and_operators(pages, team):
    from playwright.sync_api import expect

    AlertRule.objects.create(name=NAME, metric=AlertMetric.STEPS_PER_RUN, agent=team.agent, threshold=Decimal("5"))
    Run.objects.create(agent=team.agent, status=RunStatus.SUCCEEDED, step_count=9)
    assert alerts_evaluate()["fired"] == 1

    inbox = pages.open(team.alice)
    banner = inbox.locator("#alert-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(f"Alert: {NAME}")  # the name as text, not markup
    expect(banner).to_contain_text("most steps in one run is 9, above 5")
    assert inbox.locator("#alert-banner img").count() == 0
    shot(inbox, "alert-banner-inbox")

    other = pages.open(team.bob)  # a reviewer, but not of this agent
    expect(other.locator("h1")).to_contain_text("Inbox")
    assert other.locator("#alert-banner").count() == 0

    console = pages.open(team.starter, "/console/")
    expect(console.locator("#alert-banner")).to_be_visible()
    expect(console.locator("table.alert-rules .alert-state")).to_contain_text("firing at 9")
    shot(console, "alert-banner-console")
