"""The dashboard in headless Chromium as an operator: the charts are drawn under the
Content-Security-Policy, and its counts open the runs list with the matching filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest, ApprovalStatus
from tests.dashboard_seed import APPROVED, EDITED, REJECTED, seed_runs
from tests.e2e import test_inbox as inbox_tests
from tests.e2e.test_csp import RECORD_VIOLATIONS
from tests.e2e.test_inbox import shot, start_refund
from tests.live import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

pages = inbox_tests.pages
server = inbox_tests.server
team = inbox_tests.team

CHARTS = ("runs", "cost", "latency", "rates", "decisions")


def open_watched(pages, user, path):
    """A page whose policy violations are recorded from its first script on."""
    page = pages.open(user, path)
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.reload()
    return page


def assert_charts_drawn(page) -> None:
    from playwright.sync_api import expect

    for name in CHARTS:
        chart = page.locator(f"#chart-{name} svg.chart[role=img]")
        expect(chart).to_be_visible()
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100, name
    # Bars and points are drawn with the stylesheet's colours (no inline style is needed).
    bar = page.locator("#chart-runs rect.s-succeeded[data-value]").first
    expect(bar).to_be_visible()
    assert bar.evaluate("(el) => getComputedStyle(el).fill") == "rgb(31, 122, 61)"
    expect(page.locator("#chart-latency circle.s-p95").first).to_be_visible()
    assert page.evaluate("() => window.__violations") == []


def test_dashboard_agent_page_and_runs_list(pages, team, celery_worker):
    from playwright.sync_api import expect

    now = timezone.now()
    history = {"user": team.starter, "reviewer": team.alice}
    for hours in (1, 2, 4, 7, 12, 20):
        at = now - timedelta(hours=hours, minutes=10)
        seed_runs(
            team.agent,
            at=at,
            status="succeeded",
            count=hours,
            cost="0.02",
            latencies=[40, 300],
            decided=[APPROVED],
            **history,
        )
        seed_runs(
            team.agent,
            at=at,
            status="failed",
            cost="0.01",
            latencies=[2500],
            decided=[REJECTED],
            error="tool timed out",
            **history,
        )
        seed_runs(team.agent, at=at, status="succeeded", cost="0.05", latencies=[900], decided=[EDITED], **history)
    # And a real run, advanced by the worker until it waits for a reviewer.
    run = start_refund(team)
    wait_until(
        lambda: ApprovalRequest.objects.filter(run=run, status=ApprovalStatus.PENDING).exists(),
        timeout=30,
        what="the refund to wait for a reviewer",
    )

    dashboard = open_watched(pages, team.starter, "/dashboard/")  # the starter is an operator
    expect(dashboard.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(dashboard.locator("#total-pending")).to_have_text("1")
    expect(dashboard.locator("#total-failed")).to_have_text("6")
    assert_charts_drawn(dashboard)
    title = dashboard.locator("#chart-runs rect.s-failed title").first.text_content()
    assert title.startswith("failed, ") and title.endswith(": 1")
    shot(dashboard, "dashboard")

    week = open_watched(pages, team.starter, "/dashboard/?window=7d")
    expect(week.locator(".window-select a[aria-current=page]")).to_have_text("7 days")
    assert_charts_drawn(week)
    shot(week, "dashboard-7d")

    # An agent's failed count opens the runs list filtered to them.
    row = dashboard.locator(f"#agents-table tr[data-slug={team.agent.slug}]")
    row.locator("[data-field=failed] a").click()
    dashboard.wait_for_url(f"**/runs/?agent={team.agent.slug}&status=failed")
    expect(dashboard.locator("#runs-table .run-row")).to_have_count(6)
    shot(dashboard, "dashboard-runs-failed")

    agent_page = open_watched(pages, team.starter, "/dashboard/")
    agent_page.locator(f"#agents-table tr[data-slug={team.agent.slug}] a").first.click()
    agent_page.wait_for_url(f"**/dashboard/agents/{team.agent.slug}/?window=24h")
    expect(agent_page.locator("#agent-name")).to_have_text(team.agent.name)
    expect(agent_page.locator("#pending-table .pending-row")).to_have_count(1)
    expect(agent_page.locator("#failures-table .failure-row")).to_have_count(6)
    assert_charts_drawn(agent_page)
    shot(agent_page, "dashboard-agent")

    runs = open_watched(pages, team.starter, "/runs/")
    expect(runs.locator("#runs-table .run-row")).to_have_count(50)
    assert runs.evaluate("() => window.__violations") == []
    shot(runs, "runs-list")
