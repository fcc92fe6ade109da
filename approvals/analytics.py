"""Reviewer analytics: the rubber-stamp signal.

This module states the interface the alert evaluator (approvals.alert_metrics) reads:
``rubber_stamp_signals(since=...)`` returns one ``ReviewerStats`` per reviewer and agent with
decisions since then, ``rubber_stamp`` set for those who approve fast and unchanged most of the
time. The computation lands with the reviewer analytics; until then it finds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ReviewerStats:
    reviewer_id: int
    reviewer: str
    agent_slug: str
    decisions: int
    # Of the reviewer's decisions, the share approved quickly and with the arguments unchanged.
    fast_unchanged_share: float
    rubber_stamp: bool


def rubber_stamp_signals(*, since: datetime) -> list[ReviewerStats]:
    """Per reviewer and agent, their decisions since ``since`` and whether they look rubber-stamped."""
    return []
