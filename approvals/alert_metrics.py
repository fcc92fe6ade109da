"""What each alert metric measures, read from the database over the rule's window.

Each reader returns the value the rule's threshold is compared with and the evidence that the
alert stores (and its webhook sends): counts and the ids of what contributed, never contents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Max, Q, Sum

from agents.models import Run, Step, ToolCall, ToolCallStatus
from approvals.analytics import rubber_stamp_signals
from approvals.models import AlertMetric, AlertRule, ApprovalRequest, ApprovalStatus
from audit.types import JSON, JSONObject

# The ends of a tool call that ran: the error rate's denominator.
FINISHED_CALLS = (ToolCallStatus.SUCCEEDED, ToolCallStatus.FAILED, ToolCallStatus.UNKNOWN)
FAILED_CALLS = (ToolCallStatus.FAILED, ToolCallStatus.UNKNOWN)
VALUE_PLACES = Decimal("0.0001")
# How many ids the evidence names at most.
EVIDENCE_IDS = 20


@dataclass(frozen=True)
class Measure:
    value: Decimal
    evidence: JSONObject = field(default_factory=dict)


def tool_error_rate(*, rule: AlertRule, now: datetime) -> Measure:
    """Percent of the tool calls that finished in the window that failed (or ended unknown)."""
    calls = ToolCall.objects.filter(status__in=FINISHED_CALLS, updated_at__gt=now - _window(rule))
    if rule.agent_id is not None:
        calls = calls.filter(run__agent_id=rule.agent_id)
    counts = calls.aggregate(finished=Count("pk"), failed=Count("pk", filter=Q(status__in=FAILED_CALLS)))
    finished, failed = counts["finished"], counts["failed"]
    rate = Decimal(100 * failed) / finished if finished else Decimal(0)
    return Measure(rate.quantize(Decimal("0.01")), {"finished_calls": finished, "failed_calls": failed})


def cost_per_hour(*, rule: AlertRule, now: datetime) -> Measure:
    """The cost of the steps recorded in the window, scaled to an hour."""
    steps = Step.objects.filter(created_at__gt=now - _window(rule))
    if rule.agent_id is not None:
        steps = steps.filter(run__agent_id=rule.agent_id)
    # To the column's places: SQLite sums decimals as floats.
    total = (steps.aggregate(total=Sum("cost"))["total"] or Decimal(0)).quantize(Decimal("0.000001"))
    per_hour = total * Decimal(3600) / Decimal(rule.window_seconds)
    return Measure(per_hour.quantize(Decimal("0.0001")), {"window_cost": str(total)})


def approvals_over_sla(*, rule: AlertRule, now: datetime) -> Measure:
    """Pending requests older than their agent's approval SLA (whatever their age: no window)."""
    overdue = ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, escalate_at__lt=now)
    if rule.agent_id is not None:
        overdue = overdue.filter(agent_id=rule.agent_id)
    ids = list(overdue.order_by("escalate_at", "pk").values_list("pk", flat=True)[: EVIDENCE_IDS + 1])
    count = overdue.count() if len(ids) > EVIDENCE_IDS else len(ids)
    return Measure(Decimal(count), {"approval_ids": ids[:EVIDENCE_IDS]})


def steps_per_run(*, rule: AlertRule, now: datetime) -> Measure:
    """The most steps taken by one run created in the window."""
    runs = Run.objects.filter(created_at__gt=now - _window(rule))
    if rule.agent_id is not None:
        runs = runs.filter(agent_id=rule.agent_id)
    most = runs.aggregate(most=Max("step_count"))["most"] or 0
    over = list(
        runs.filter(step_count__gt=rule.threshold)
        .order_by("-step_count", "pk")
        .values_list("pk", flat=True)[:EVIDENCE_IDS]
    )
    return Measure(Decimal(most), {"run_ids": over})


def rubber_stamp(*, rule: AlertRule, now: datetime) -> Measure:
    """How many reviewers (per agent) the rubber-stamp signal flags over the window."""
    signals = [s for s in rubber_stamp_signals(since=now - _window(rule)) if s.rubber_stamp]
    if rule.agent is not None:
        slug = rule.agent.slug
        signals = [s for s in signals if s.agent_slug == slug]
    reviewers: list[JSON] = [
        {"reviewer": s.reviewer, "agent": s.agent_slug, "decisions": s.decisions} for s in signals[:EVIDENCE_IDS]
    ]
    return Measure(Decimal(len(signals)), {"reviewers": reviewers})


def _window(rule: AlertRule) -> timedelta:
    return timedelta(seconds=rule.window_seconds)


METRICS: dict[str, Callable[..., Measure]] = {
    AlertMetric.TOOL_ERROR_RATE: tool_error_rate,
    AlertMetric.COST_PER_HOUR: cost_per_hour,
    AlertMetric.APPROVALS_OVER_SLA: approvals_over_sla,
    AlertMetric.STEPS_PER_RUN: steps_per_run,
    AlertMetric.RUBBER_STAMP: rubber_stamp,
}


def alert_rule_measure(*, rule: AlertRule, now: datetime) -> Measure:
    measure = METRICS[rule.metric](rule=rule, now=now)
    # To the places Alert.value stores: a fired alert's webhook shows what a resolved one reads back.
    return Measure(measure.value.quantize(VALUE_PLACES), measure.evidence)
