"""The dashboard pages: who may see them, numbers that agree with the database, the window, escaping, queries."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm

from agents.models import Agent, Run, RunStatus
from approvals.models import ApprovalRequest, ApprovalStatus
from tests.conftest import make_user
from tests.dashboard_seed import APPROVED, EDITED, EXPIRED, PENDING, PENDING_ESCALATED, REJECTED, seed_runs
from tests.pages import SCRIPT, client_for

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"


@dataclass
class Scenario:
    support: Agent
    billing: Agent
    starter: User
    other_starter: User


@pytest.fixture
def scenario(operator, reviewer) -> Scenario:
    """Runs of several outcomes across hours, steps with latencies, approvals decided every way.

    In the last 24 hours the support agent has 9 runs (3 succeeded, 3 failed, 1 rejected,
    1 cancelled, 1 waiting) costing $0.52, 11 steps, 6 ended approval requests and 2 pending;
    the billing agent 2 runs ($2.00), 1 rejected request and 1 pending. Two more support runs
    are 30 hours old: in the 7-day window only.
    """
    support = Agent.objects.create(slug="support", name="Support agent", objective="Helps.", scope="Support.")
    billing = Agent.objects.create(slug="billing", name="Billing agent", objective="Bills.", scope="Bills.")
    other = make_user("other_starter")
    now = timezone.now()
    recent, earlier, old = now - timedelta(hours=1), now - timedelta(hours=3), now - timedelta(hours=30)
    seed = {"user": operator, "reviewer": reviewer}
    seed_runs(
        support, at=recent, status="succeeded", count=2, cost="0.10", latencies=[5, 20, 40], decided=[APPROVED], **seed
    )
    seed_runs(support, at=recent, status="succeeded", cost="0.25", latencies=[300, 2000], decided=[EDITED], **seed)
    seed_runs(
        support,
        at=recent,
        status="failed",
        cost="0.05",
        latencies=[8000, 9000, 9500],
        decided=[REJECTED],
        error="timed out",
        **seed,
    )
    seed_runs(support, at=earlier, status="failed", count=2, cost="0.01", error="boom", **seed)
    seed_runs(support, at=earlier, status="rejected", decided=[REJECTED], **seed)
    seed_runs(support, at=earlier, status="cancelled", decided=[EXPIRED], **seed)
    seed_runs(support, at=earlier, status="waiting", decided=[PENDING, PENDING_ESCALATED], **seed)
    seed_runs(support, at=old, status="succeeded", count=2, cost="1.00", latencies=[50], decided=[APPROVED], **seed)
    seed_runs(
        billing,
        at=recent,
        user=other,
        reviewer=reviewer,
        status="succeeded",
        cost="2.00",
        latencies=[10],
        decided=[REJECTED],
    )
    seed_runs(billing, at=recent, user=other, reviewer=reviewer, status="waiting", decided=[PENDING])
    return Scenario(support=support, billing=billing, starter=operator, other_starter=other)


def svg_of(response, chart: str) -> ET.Element:
    return ET.fromstring(str(response.context["charts"][chart]))


def bar_totals(root: ET.Element) -> dict[str, float]:
    totals: dict[str, float] = {}
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("data-value"):
            totals[rect.get("class")] = totals.get(rect.get("class"), 0) + float(rect.get("data-value"))
    return totals


def row_for(response, slug: str) -> dict:
    (row,) = [row for row in response.context["agents"] if row["agent"].slug == slug]
    return row


# Who may see it


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/agents/support/"])
def test_operators_and_auditors_see_it_others_get_403(scenario, path, auditor, reviewer, outsider):
    starter = make_user("starter")
    assign_perm("start_run", starter, scenario.support)
    assign_perm("review_agent", reviewer, scenario.support)
    assert client_for(scenario.starter).get(path).status_code == 200
    assert client_for(auditor).get(path).status_code == 200
    for user in (reviewer, starter, outsider):
        assert client_for(user).get(path).status_code == 403, user.username


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/agents/support/", "/dashboard/agents/nobody/"])
def test_anonymous_visitors_go_to_sign_in(db, path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/dashboard/")


def test_an_unknown_agent_is_404_for_a_reader_and_403_for_others(operator, outsider):
    assert client_for(operator).get("/dashboard/agents/nobody/").status_code == 404
    assert client_for(outsider).get("/dashboard/agents/nobody/").status_code == 403


def test_the_navigation_links_the_dashboard_for_those_who_may_see_it(operator, auditor, reviewer):
    assert 'href="/dashboard/"' in client_for(operator).get("/runs/").text
    assert 'href="/dashboard/"' in client_for(auditor).get("/runs/").text
    assert 'href="/dashboard/"' not in client_for(reviewer).get("/runs/").text


# The numbers


def test_the_numbers_agree_with_the_database(scenario, operator):
    response = client_for(operator).get("/dashboard/")
    assert response.status_code == 200
    since = response.context["window"].buckets(now=timezone.now())[0]
    window_runs = Run.objects.filter(created_at__gte=since)
    assert response.context["total_runs"] == window_runs.count() == 11
    assert response.context["failed"] == window_runs.filter(status=RunStatus.FAILED).count() == 3
    assert response.context["total_cost"] == "$2.52"
    assert response.context["pending"] == ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING).count() == 3

    support = row_for(response, "support")
    counts = {o["name"]: o["count"] for o in support["outcomes"]}
    assert counts == {"succeeded": 3, "failed": 3, "rejected": 1, "cancelled": 1, "in progress": 1}
    assert support["runs"] == window_runs.filter(agent=scenario.support).count() == 9
    assert support["cost"] == "$0.52"
    assert support["cost_per_run"] == "$0.0578"
    # Latencies 5, 5, 20, 20, 40, 40, 300, 2000, 8000, 9000, 9500 ms in the /metrics buckets: as
    # histogram_quantile would, p50 (rank 5.5) is 10 + 40 * 3.5 / 4 ms, p95 (rank 10.45) is
    # 5 + 5 * 2.45 / 3 s.
    assert (support["p50"], support["p95"]) == ("45 ms", "9.1 s")
    assert support["ended"] == 6
    rates = {r["name"]: r["value"] for r in support["rates"]}
    assert rates == {
        "approved unchanged": "33 %",
        "approved after an edit": "17 %",
        "rejected": "33 %",
        "expired": "17 %",
        "cancelled with the run": "0 %",
    }
    assert (support["escalated"], support["pending"]) == (2, 2)
    billing = row_for(response, "billing")
    assert (billing["runs"], billing["cost"], billing["pending"], billing["ended"]) == (2, "$2.00", 1, 1)

    # The charts draw the same numbers.
    assert bar_totals(svg_of(response, "runs")) == {
        "s-succeeded": 4,
        "s-failed": 3,
        "s-rejected": 1,
        "s-cancelled": 1,
        "s-in_progress": 2,
    }
    assert bar_totals(svg_of(response, "cost")) == {"s-cost": pytest.approx(2.52)}
    # Decided by a person: 2 approvals after 20 s, an edit after 100 s, 3 rejections after 10 minutes.
    decisions = {
        rect.find(f"{SVG}title").text.split(": ")[0]: float(rect.get("data-value"))
        for rect in svg_of(response, "decisions").iter(f"{SVG}rect")
        if rect.get("data-value")
    }
    assert decisions == {"decisions, ≤ 30 s": 2, "decisions, ≤ 2 min": 1, "decisions, ≤ 10 min": 3}


def test_starters_by_cost(scenario, operator):
    response = client_for(operator).get("/dashboard/")
    rows = [(s["username"], s["runs"], s["cost"], s["cost_per_run"]) for s in response.context["starters"]]
    assert rows == [("other_starter", 2, "$2.00", "$1.00"), ("operator", 9, "$0.52", "$0.0578")]
    assert 'href="/runs/?starter=other_starter"' in response.text


def test_counts_link_to_the_filtered_runs_list(scenario, operator):
    response = client_for(operator).get("/dashboard/")
    assert 'href="/runs/?agent=support&amp;status=failed"' in response.text
    assert 'href="/runs/?status=failed"' in response.text
    assert 'href="/dashboard/agents/support/?window=24h"' in response.text
    day = timezone.localtime(timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%d")
    assert f"/runs/?status=failed&amp;date_from={day}&amp;date_to={day}" in str(response.context["charts"]["runs"])
    listed = client_for(operator).get("/runs/?agent=support&status=failed")
    assert listed.status_code == 200
    assert listed.context["total"] == row_for(response, "support")["failed"]


def test_the_window_widens_to_seven_days(scenario, operator):
    response = client_for(operator).get("/dashboard/?window=7d")
    assert response.status_code == 200
    assert response.context["total_runs"] == 13
    assert row_for(response, "support")["cost"] == "$2.52"
    assert len(svg_of(response, "runs").findall(f".//{SVG}g[@class='chart-axis']/{SVG}text")) >= 7


def test_the_agent_page_shows_only_that_agent(scenario, operator):
    response = client_for(operator).get("/dashboard/agents/billing/")
    assert response.status_code == 200
    row = response.context["row"]
    assert (row["runs"], row["cost"], row["pending"]) == (2, "$2.00", 1)
    assert bar_totals(svg_of(response, "runs")) == {"s-succeeded": 1, "s-in_progress": 1}
    assert [s["username"] for s in response.context["starters"]] == ["other_starter"]
    assert "Support agent" not in response.text
    assert response.context["failures"] == []
    assert [p["approval"].agent_id for p in response.context["pending"]] == [scenario.billing.pk]

    support = client_for(operator).get("/dashboard/agents/support/")
    assert support.context["row"]["runs"] == 9
    assert "Billing agent" not in support.text
    failures = [failure["run"] for failure in support.context["failures"]]
    assert len(failures) == 3 and {run.agent_id for run in failures} == {scenario.support.pk}
    assert f'href="/runs/{failures[0].pk}/"' in support.text
    assert 'href="/runs/?agent=support&amp;status=failed"' in support.text
    assert len(support.context["pending"]) == 2
    assert "prepare-and-propose" in support.text


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/agents/support/"])
@pytest.mark.parametrize("window", ["1y", "", "24H", "<script>"])
def test_a_bad_window_answers_400_with_a_message(scenario, operator, path, window):
    response = client_for(operator).get(path, {"window": window})
    assert response.status_code == 400
    assert "Unknown window: choose one of 24h, 7d, 30d." in response.text
    assert "<svg" not in response.text
    assert "<script>" not in response.text


def test_agent_names_are_escaped(operator):
    agent = Agent.objects.create(slug="hostile", name=SCRIPT, objective="x", scope="x")
    seed_runs(agent, user=operator, at=timezone.now() - timedelta(hours=1), status="failed", cost="0.5", latencies=[10])
    for path in ("/dashboard/", "/dashboard/agents/hostile/"):
        response = client_for(operator).get(path)
        assert response.status_code == 200
        assert SCRIPT not in response.text
        assert "&lt;script&gt;" in response.text
        for chart in response.context["charts"].values():
            ET.fromstring(str(chart))  # well-formed: nothing unescaped broke out


def test_an_empty_database_shows_empty_charts(operator):
    response = client_for(operator).get("/dashboard/")
    assert response.status_code == 200
    assert "No runs in this window." in response.text
    assert "No steps in this window." in response.text
    assert response.context["total_runs"] == 0


def count_queries(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_the_number_of_queries_does_not_grow_with_the_runs(operator, reviewer):
    agent = Agent.objects.create(slug="support", name="Support agent", objective="x", scope="x")
    client = client_for(operator)

    def seed(count: int) -> None:
        for hours in range(count // 10):
            at = timezone.now() - timedelta(hours=hours % 20, minutes=5)
            seed_runs(
                agent,
                user=operator,
                reviewer=reviewer,
                at=at,
                status="succeeded",
                count=5,
                latencies=[5, 50],
                decided=[APPROVED],
            )
            seed_runs(
                agent,
                user=operator,
                reviewer=reviewer,
                at=at,
                status="failed",
                count=5,
                latencies=[500],
                decided=[REJECTED, PENDING],
            )

    seed(10)
    few = {path: count_queries(client, path) for path in ("/dashboard/", "/dashboard/agents/support/")}
    seed(190)
    assert Run.objects.count() == 200
    many = {path: count_queries(client, path) for path in few}
    assert many == few
    # Session, user and groups, then the dashboard's own: agents, runs, the steps' roll-up watermark
    # and the steps, approvals and the edited ones, pending, decision times, starters (the agent
    # page: the agent, failures and pending list too), and the firing alerts of the banner. On
    # PostgreSQL the runs and the starters are one query (grouping sets).
    together = 1 if connection.vendor == "postgresql" else 0
    assert few == {"/dashboard/": 13 - together, "/dashboard/agents/support/": 15 - together}
