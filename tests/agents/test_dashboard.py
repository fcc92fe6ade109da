"""The dashboard's reads: windows and their buckets, percentiles from bucket counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.utils import timezone

from agents.dashboard import WINDOWS, Latency, bucket_quantile, dashboard_for
from agents.models import Agent, Run
from tests.conftest import make_user
from tests.dashboard_seed import seed_runs

BOUNDS = (5, 10, 50, 100)


@pytest.mark.parametrize(
    ("q", "cumulative", "total", "expected"),
    [
        (0.5, [2, 2, 6, 6], 6, 10 + 40 * 1 / 4),  # rank 3 lies in (10, 50], the 1st of its 4
        (0.5, [4, 4, 4, 4], 4, 2.5),  # the first bucket starts at 0
        (0.95, [0, 0, 0, 10], 20, 100),  # past the last bound: the last bound
        (1.0, [1, 3, 3, 3], 3, 10),
    ],
)
def test_bucket_quantile_is_histogram_quantile(q, cumulative, total, expected):
    assert bucket_quantile(q, BOUNDS, cumulative, total) == pytest.approx(expected)


def test_bucket_quantile_of_no_observations_is_none():
    assert bucket_quantile(0.5, BOUNDS, [0, 0, 0, 0], 0) is None
    assert Latency().quantile(0.95) is None


def test_windows_cover_whole_hours_and_days():
    now = datetime(2026, 3, 29, 14, 25, tzinfo=UTC)
    hours = WINDOWS["24h"].buckets(now=now)
    assert len(hours) == 24
    assert hours[-1] == datetime(2026, 3, 29, 14, tzinfo=UTC) and hours[0] == datetime(2026, 3, 28, 15, tzinfo=UTC)
    assert all(b - a == timedelta(hours=1) for a, b in zip(hours, hours[1:], strict=False))
    days = WINDOWS["30d"].buckets(now=now)
    assert len(days) == 30 and days[-1] == datetime(2026, 3, 29, tzinfo=UTC)
    assert WINDOWS["7d"].buckets(now=now)[0] == datetime(2026, 3, 23, tzinfo=UTC)


def test_hours_in_another_time_zone_across_a_change_of_the_clocks(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    with timezone.override("Europe/Berlin"):
        # 29 March 2026: the clocks go from 02:00 to 03:00 in Berlin.
        hours = WINDOWS["24h"].buckets(now=datetime(2026, 3, 29, 12, 30, tzinfo=UTC))
        utc = [hour.astimezone(UTC) for hour in hours]
        assert len(set(utc)) == 24
        # An hour apart in real time (Python subtracts times of one zone on the wall clock).
        assert all(b - a == timedelta(hours=1) for a, b in zip(utc, utc[1:], strict=False))
        assert [timezone.localtime(hour).hour for hour in hours[:4]] == [14, 15, 16, 17]  # 13:00 UTC the day before
        days = WINDOWS["7d"].buckets(now=datetime(2026, 3, 29, 12, 30, tzinfo=UTC))
        assert [timezone.localtime(d).hour for d in days] == [0] * 7


@pytest.mark.django_db
def test_rows_land_in_their_bucket_and_older_rows_stay_out(operator):
    agent = Agent.objects.create(slug="a", name="A", objective="x", scope="x")
    now = timezone.now()
    window = WINDOWS["24h"]
    first = window.buckets(now=now)[0]
    seed_runs(agent, user=operator, at=first, status="succeeded", cost="0.5", latencies=[7])
    seed_runs(agent, user=operator, at=first - timedelta(microseconds=1), status="failed")
    seed_runs(agent, user=operator, at=now, status="failed", count=2)
    data = dashboard_for(window=window, now=now)
    assert data.runs["succeeded"][0] == 1 and sum(data.runs["succeeded"]) == 1
    assert data.runs["failed"][-1] == 2 and sum(data.runs["failed"]) == 2
    assert data.cost[0] == pytest.approx(0.5)
    assert data.latency[0].total == 1 and data.latency[0].cumulative[1] == 1  # 7 ms: at or under 10 ms
    (summary,) = data.agents
    assert summary.total_runs == 3


@pytest.mark.django_db
def test_hour_rows_land_in_their_bucket_in_another_time_zone(operator, settings):
    settings.TIME_ZONE = "America/New_York"
    agent = Agent.objects.create(slug="a", name="A", objective="x", scope="x")
    now = timezone.now()
    window = WINDOWS["24h"]
    starts = window.buckets(now=now)
    seed_runs(agent, user=operator, at=starts[0], status="succeeded", latencies=[7])
    seed_runs(agent, user=operator, at=starts[5] - timedelta(microseconds=1), status="failed", count=2)
    seed_runs(agent, user=operator, at=starts[0] - timedelta(microseconds=1), status="failed")
    data = dashboard_for(window=window, now=now)
    assert data.runs["succeeded"][0] == 1 and data.latency[0].total == 1
    assert data.runs["failed"][4] == 2 and sum(data.runs["failed"]) == 2


@pytest.mark.django_db
def test_the_top_starters_and_the_runs_are_what_a_direct_count_gives(operator):
    # Twelve starters and runs nobody started, ties on cost broken by runs then by name: the top
    # ten as the runs list would rank them, and every run still counted once in the totals (on
    # PostgreSQL both come from one grouping-sets query).
    agents = [Agent.objects.create(slug=slug, name=slug, objective="x", scope="x") for slug in ("a", "b")]
    now = timezone.now()
    for i in range(12):
        user = make_user(f"starter{i:02d}")
        agent, cost = agents[i % 2], ("0.30" if i % 3 else "0.10")
        seed_runs(agent, user=user, at=now - timedelta(hours=i), status="succeeded", count=1 + i % 4, cost=cost)
    seed_runs(agents[0], user=None, at=now, status="failed", count=3, cost="0.20")
    data = dashboard_for(window=WINDOWS["24h"], now=now)
    direct = sorted(
        (
            (-(row["cost"] or Decimal(0)), -row["n"], row["started_by__username"] or "")
            for row in Run.objects.order_by()
            .values("started_by_id", "started_by__username")
            .annotate(n=Count("pk"), cost=Sum("cost"))
        ),
    )[:10]
    got = [(-starter.cost, -starter.runs, starter.username) for starter in data.starters]
    assert [(float(c), n, u) for c, n, u in got] == [(float(c), n, u) for c, n, u in direct]
    assert data.total_runs == Run.objects.count() == 33
    assert float(data.total_cost) == pytest.approx(float(Run.objects.aggregate(total=Sum("cost"))["total"]))
    assert {summary.agent.slug: summary.total_runs for summary in data.agents} == {
        agent.slug: Run.objects.filter(agent=agent).count() for agent in agents
    }
