"""Reviewer analytics and the rubber-stamp signal: a scripted fast reviewer is caught, a careful
one is not. Decisions go through the decision service; their times are then set on the rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from approvals.analytics import dwell_seconds, reviewer_stats, rubber_stamp_signals
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, Decision
from tests.pages import waiting_refund

pytestmark = pytest.mark.django_db

START = timezone.now() - timedelta(days=1)


def at(approval: ApprovalRequest, *, requested: datetime, decided: datetime) -> None:
    """The request created at ``requested`` and its decision taken at ``decided``."""
    ApprovalRequest.objects.filter(pk=approval.pk).update(created_at=requested, decided_at=decided)
    Decision.objects.filter(request=approval).update(created_at=decided)


def fast_reviewer_script(agent, starter, reviewer, count: int, *, every: float = 60, after: float = 1.5) -> None:
    """A request every ``every`` seconds, each approved unchanged ``after`` seconds later."""
    for i in range(count):
        approval = waiting_refund(agent, starter)
        approval_request_decide(approval=approval, reviewer=reviewer, verdict="approve")
        requested = START + timedelta(seconds=i * every)
        at(approval, requested=requested, decided=requested + timedelta(seconds=after))


def careful_reviewer_script(agent, starter, reviewer, count: int) -> None:
    """Reads each request for half a minute or more; edits one in five, rejects one in ten."""
    for i in range(count):
        approval = waiting_refund(agent, starter)
        if i % 5 == 1:
            arguments = {**approval.arguments, "amount": 100}
            approval_request_decide(approval=approval, reviewer=reviewer, verdict="edit", arguments=arguments)
        elif i % 10 == 3:
            approval_request_decide(approval=approval, reviewer=reviewer, verdict="reject", comment="not our order")
        else:
            approval_request_decide(approval=approval, reviewer=reviewer, verdict="approve")
        requested = START + timedelta(seconds=i * 120 + 7)
        at(approval, requested=requested, decided=requested + timedelta(seconds=30 + i % 4 * 15))


@pytest.fixture
def both_reviewers(support_agent, assigned_reviewer, other_reviewer):
    assign_perm("review_agent", other_reviewer, support_agent)
    return assigned_reviewer, other_reviewer


def test_the_scripted_fast_reviewer_is_flagged_and_the_careful_one_is_not(support_agent, starter, both_reviewers):
    fast, careful = both_reviewers
    fast_reviewer_script(support_agent, starter, fast, 25)
    careful_reviewer_script(support_agent, starter, careful, 25)

    stats = {s.reviewer: s for s in reviewer_stats(since=START - timedelta(hours=1))}
    stamp, care = stats["reviewer"], stats["other_reviewer"]
    assert (stamp.decisions, stamp.agent_slug, stamp.rubber_stamp) == (25, "support", True)
    assert stamp.median_seconds == pytest.approx(1.5) and stamp.fast_unchanged_share == 1.0
    assert stamp.edit_rate == stamp.rejection_rate == 0
    assert (care.decisions, care.rubber_stamp, care.fast_unchanged_share) == (25, False, 0)
    assert care.edit_rate == pytest.approx(5 / 25) and care.rejection_rate == pytest.approx(3 / 25)
    assert care.median_seconds == pytest.approx(45)
    assert [s.reviewer for s in rubber_stamp_signals(since=START - timedelta(hours=1))] == ["reviewer"]


def test_clearing_a_queue_is_measured_from_the_previous_decision(support_agent, starter, assigned_reviewer):
    """Each request waited an hour, and each was approved a second after the one before: the
    time since the request overstates the care; the dwell does not."""
    requested = START
    for i in range(25):
        approval = waiting_refund(support_agent, starter)
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
        at(approval, requested=requested, decided=START + timedelta(hours=1, seconds=i))
    [stats] = reviewer_stats(since=START)
    assert stats.rubber_stamp and stats.median_seconds == pytest.approx(1)


def test_the_previous_decision_before_the_window_counts(support_agent, starter, assigned_reviewer):
    old, new = waiting_refund(support_agent, starter), waiting_refund(support_agent, starter)
    for approval in (old, new):
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    at(old, requested=START - timedelta(hours=2), decided=START - timedelta(seconds=2))
    at(new, requested=START - timedelta(hours=1), decided=START + timedelta(seconds=1))
    [stats] = reviewer_stats(since=START)
    assert stats.decisions == 1 and stats.median_seconds == pytest.approx(3)


def test_too_few_decisions_or_too_slow_is_no_rubber_stamp(support_agent, starter, both_reviewers, settings):
    settings.RUBBER_STAMP_MIN_DECISIONS = 20
    fast, slow = both_reviewers
    fast_reviewer_script(support_agent, starter, fast, 19)
    [stats] = reviewer_stats(since=START)
    assert stats.fast_unchanged_share == 1.0 and not stats.rubber_stamp
    settings.RUBBER_STAMP_SECONDS = 1
    assert reviewer_stats(since=START)[0].fast_unchanged_share == 0


def test_stats_are_one_query_and_filter_by_agent(support_agent, starter, both_reviewers):
    fast, careful = both_reviewers
    fast_reviewer_script(support_agent, starter, fast, 3)
    careful_reviewer_script(support_agent, starter, careful, 3)
    with CaptureQueriesContext(connection) as queries:
        stats = reviewer_stats(since=START)
    assert len(queries) == 1 and len(stats) == 2
    assert reviewer_stats(since=START, agent_ids=[support_agent.pk + 1000]) == []
    assert len(reviewer_stats(since=START, agent_ids=[support_agent.pk])) == 2
    assert reviewer_stats(since=timezone.now() + timedelta(days=1)) == []


def test_dwell_is_never_negative():
    now = timezone.now()
    assert dwell_seconds(decided_at=now, requested_at=now + timedelta(seconds=1), previous_at=None) == 0
    assert dwell_seconds(decided_at=now, requested_at=now - timedelta(seconds=9), previous_at=now) == 0


def test_the_stats_api_is_for_operators_and_refuses_a_bad_since(
    support_agent, starter, assigned_reviewer, operator, auditor
):
    fast_reviewer_script(support_agent, starter, assigned_reviewer, 20)
    client = APIClient()
    client.force_authenticate(operator)
    response = client.get("/api/v1/reviewers/stats/", {"since": (START - timedelta(minutes=1)).isoformat()})
    assert response.status_code == 200
    [row] = response.json()
    assert (row["reviewer"], row["decisions"], row["rubber_stamp"]) == ("reviewer", 20, True)
    bad = client.get("/api/v1/reviewers/stats/?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.json()["errors"]
    for user in (assigned_reviewer, auditor):
        client.force_authenticate(user)
        assert client.get("/api/v1/reviewers/stats/").status_code == 403
