"""Reviewer analytics: how each reviewer decides each agent's requests, and the rubber-stamp signal.

Approval fatigue is how human oversight fails in practice: a reviewer who approves request after
request unchanged, each within a few seconds, is no longer reviewing. The signal names them to
operators; what to do about it (rotate, retrain, lower the load) is a person's call.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import DateTimeField, F, OuterRef, Subquery, Window
from django.db.models.functions import Coalesce, Lag

from approvals.models import Decision, DecisionVerdict

# Verdicts that let the proposal stand as it was: the approvals a rubber stamp gives.
UNCHANGED_VERDICTS = frozenset({DecisionVerdict.APPROVE, DecisionVerdict.OK, DecisionVerdict.DONE})
# Verdicts that say no to what was proposed.
REJECTING_VERDICTS = frozenset({DecisionVerdict.REJECT, DecisionVerdict.DISMISS})


@dataclass(frozen=True)
class ReviewerStats:
    """One reviewer's decisions on one agent's requests since a moment."""

    reviewer_id: int
    reviewer: str
    agent_slug: str
    decisions: int
    median_seconds: float | None
    edit_rate: float
    rejection_rate: float
    fast_unchanged_share: float
    rubber_stamp: bool


@dataclass(frozen=True)
class _Row:
    reviewer_id: int
    reviewer: str
    agent_id: int
    agent_slug: str
    verdict: str
    dwell_seconds: float


def dwell_seconds(*, decided_at: datetime, requested_at: datetime, previous_at: datetime | None) -> float:
    """How long the reviewer can have looked at the request before deciding it.

    The time since the request was created overstates care when a queue builds up: a reviewer
    who clears fifty waiting requests in a minute spent about a second on each, however long they
    waited. So the dwell is the smaller of the time since the request was created and the time
    since the same reviewer's previous decision (of any agent: a reviewer's attention is one).
    """
    start = requested_at if previous_at is None else max(requested_at, previous_at)
    return max((decided_at - start).total_seconds(), 0.0)


def _rows(*, since: datetime) -> list[_Row]:
    """Every decision since ``since`` with its dwell, in one query: the reviewer's previous
    decision comes from a window function over their decisions, and for their first one in the
    window from a subquery of the last before ``since``."""
    before = (
        Decision.objects.filter(reviewer_id=OuterRef("reviewer_id"), created_at__lt=since)
        .order_by("-created_at", "-id")
        .values("created_at")[:1]
    )
    previous = Window(Lag("created_at"), partition_by=[F("reviewer_id")], order_by=[F("created_at"), F("id")])
    decisions = (
        Decision.objects.filter(created_at__gte=since)
        .annotate(previous_at=Coalesce(previous, Subquery(before), output_field=DateTimeField()))
        .values_list(
            "reviewer_id",
            "reviewer__username",
            "reviewer__first_name",
            "reviewer__last_name",
            "request__agent_id",
            "request__agent__slug",
            "verdict",
            "created_at",
            "request__created_at",
            "previous_at",
        )
        .order_by()
    )
    return [
        _Row(
            reviewer_id=reviewer_id,
            reviewer=f"{first} {last}".strip() or username,
            agent_id=agent_id,
            agent_slug=slug,
            verdict=verdict,
            dwell_seconds=dwell_seconds(decided_at=decided_at, requested_at=requested_at, previous_at=previous_at),
        )
        for reviewer_id, username, first, last, agent_id, slug, verdict, decided_at, requested_at, previous_at in (
            decisions
        )
    ]


def _stats(rows: list[_Row]) -> ReviewerStats:
    first = rows[0]
    count = len(rows)
    fast = float(settings.RUBBER_STAMP_SECONDS)
    fast_unchanged = sum(1 for row in rows if row.verdict in UNCHANGED_VERDICTS and row.dwell_seconds < fast)
    share = fast_unchanged / count
    return ReviewerStats(
        reviewer_id=first.reviewer_id,
        reviewer=first.reviewer,
        agent_slug=first.agent_slug,
        decisions=count,
        median_seconds=statistics.median(row.dwell_seconds for row in rows),
        edit_rate=sum(1 for row in rows if row.verdict == DecisionVerdict.EDIT) / count,
        rejection_rate=sum(1 for row in rows if row.verdict in REJECTING_VERDICTS) / count,
        fast_unchanged_share=share,
        rubber_stamp=count >= settings.RUBBER_STAMP_MIN_DECISIONS and share >= settings.RUBBER_STAMP_SHARE,
    )


def reviewer_stats(*, since: datetime, agent_ids: Collection[int] | None = None) -> list[ReviewerStats]:
    """Per reviewer and agent, the decisions since ``since``: how many, the median dwell, the share
    edited, the share rejected or dismissed, the share approved unchanged faster than
    RUBBER_STAMP_SECONDS, and whether that share makes a rubber stamp (RUBBER_STAMP_SHARE of at
    least RUBBER_STAMP_MIN_DECISIONS decisions). ``agent_ids`` keeps only those agents' requests;
    dwell times still count the reviewer's decisions of every agent. Rubber stamps first."""
    groups: dict[tuple[int, int], list[_Row]] = {}
    for row in _rows(since=since):
        if agent_ids is None or row.agent_id in agent_ids:
            groups.setdefault((row.reviewer_id, row.agent_id), []).append(row)
    stats = [_stats(rows) for rows in groups.values()]
    return sorted(stats, key=lambda s: (not s.rubber_stamp, -s.fast_unchanged_share, s.reviewer, s.agent_slug))


def rubber_stamp_signals(*, since: datetime) -> list[ReviewerStats]:
    """The reviewers (per agent) whose decisions since ``since`` look like rubber stamps."""
    return [stats for stats in reviewer_stats(since=since) if stats.rubber_stamp]
