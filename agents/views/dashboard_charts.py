"""The dashboard's charts and tables, drawn from ``agents.dashboard.Dashboard``: presentation only."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from agents.dashboard import ENDINGS, OUTCOMES, AgentSummary, Dashboard
from agents.models import Agent, RunStatus
from config.charts import Series, histogram, line_chart, plain, stacked_bars
from config.metrics import DECISION_BUCKETS

OUTCOME_NAMES = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.REJECTED: "rejected",
    RunStatus.CANCELLED: "cancelled",
    "in_progress": "in progress",
}
ENDING_NAMES = {
    "approved": "approved unchanged",
    "edited": "approved after an edit",
    "rejected": "rejected",
    "expired": "expired",
    "cancelled": "cancelled with the run",
}


def money(value: float | Decimal) -> str:
    """Cents, and under a dollar up to four decimals: model calls cost fractions of a cent."""
    if abs(float(value)) >= 1:
        return f"${value:,.2f}"
    text = f"{value:,.4f}"
    while text.endswith("0") and len(text.split(".")[1]) > 2:
        text = text[:-1]
    return f"${text}"


def millis(value: float) -> str:
    return f"{value:,.0f} ms" if value < 1000 else f"{value / 1000:,.1f} s".replace(".0 s", " s")


def percent(value: float) -> str:
    return f"{value:.0f} %"


def seconds(value: float) -> str:
    for size, unit in ((3600, "h"), (60, "min")):
        if value >= size:
            return f"{plain(value / size)} {unit}"
    return f"{plain(value)} s"


def runs_url(*, agent: Agent | None = None, status: str = "", day: datetime | None = None) -> str:
    """The /runs/ list with its filters: the agent, a status, the day (its From and To)."""
    params: dict[str, str] = {}
    if agent is not None:
        params["agent"] = agent.slug
    if status:
        params["status"] = status
    if day is not None:
        params["date_from"] = params["date_to"] = timezone.localtime(day).strftime("%Y-%m-%d")
    query = urlencode(params)
    return reverse("run-list") + (f"?{query}" if query else "")


def _labels(data: Dashboard) -> list[str]:
    pattern = "%H:%M" if data.window.unit == "hour" else "%m-%d"
    return [timezone.localtime(start).strftime(pattern) for start in data.buckets]


def charts(data: Dashboard, *, agent: Agent | None = None) -> dict[str, SafeString]:
    labels = _labels(data)
    per = data.window.unit
    of = f" of {agent.name}" if agent is not None else ""
    runs = [
        Series(
            OUTCOME_NAMES[outcome],
            data.runs[outcome],
            outcome,
            # "In progress" is three statuses; the runs list filters by one.
            links=None
            if outcome == "in_progress"
            else [runs_url(agent=agent, status=outcome, day=start) for start in data.buckets],
        )
        for outcome in OUTCOMES
    ]
    latency = [
        Series("p50", [bucket.quantile(0.5) for bucket in data.latency], "p50"),
        Series("p95", [bucket.quantile(0.95) for bucket in data.latency], "p95"),
    ]
    ended = [sum(data.endings[ending][i] for ending in ENDINGS) for i in range(len(labels))]
    rates = [
        Series(
            ENDING_NAMES[ending],
            [100 * n / whole if whole else None for n, whole in zip(data.endings[ending], ended, strict=True)],
            ending,
        )
        for ending in ("approved", "edited", "rejected", "expired")
    ]
    return {
        "runs": stacked_bars(
            title=f"Runs per {per} by outcome{of}", labels=labels, series=runs, empty="No runs in this window."
        ),
        "cost": stacked_bars(
            title=f"Cost per {per}{of} (US dollars)",
            labels=labels,
            series=[Series("cost", [float(cost) for cost in data.cost], "cost")],
            fmt=money,
            legend=False,
            empty="No cost in this window.",
        ),
        "latency": line_chart(
            title=f"Step latency per {per}{of}, p50 and p95",
            labels=labels,
            series=latency,
            fmt=millis,
            empty="No steps in this window.",
        ),
        "rates": line_chart(
            title=f"How approval requests ended, per {per}{of} (share of those ended)",
            labels=labels,
            series=rates,
            fmt=percent,
            top=100,
            empty="No approval request ended in this window.",
        ),
        "decisions": histogram(
            title=f"Time to decision{of}",
            labels=decision_labels(),
            counts=data.decision_times,
            name="decisions",
            css="decisions",
            empty="No decision by a person in this window.",
        ),
    }


def decision_labels() -> list[str]:
    return [f"≤ {seconds(bound)}" for bound in DECISION_BUCKETS] + [f"> {seconds(DECISION_BUCKETS[-1])}"]


def _rate(value: float | None) -> str:
    return percent(value) if value is not None else "—"


def agent_row(summary: AgentSummary) -> dict[str, Any]:
    agent = summary.agent
    p50, p95 = summary.latency.quantile(0.5), summary.latency.quantile(0.95)
    return {
        "agent": agent,
        "runs": summary.total_runs,
        "outcomes": [
            {
                "name": OUTCOME_NAMES[outcome],
                "count": summary.runs[outcome],
                "url": runs_url(agent=agent, status=outcome) if outcome != "in_progress" else "",
            }
            for outcome in OUTCOMES
        ],
        "failed": summary.runs[RunStatus.FAILED],
        "failed_url": runs_url(agent=agent, status=RunStatus.FAILED),
        "runs_url": runs_url(agent=agent),
        "cost": money(summary.cost),
        "cost_per_run": money(summary.cost_per_run) if summary.cost_per_run is not None else "—",
        "p50": millis(p50) if p50 is not None else "—",
        "p95": millis(p95) if p95 is not None else "—",
        "ended": summary.ended,
        "rates": [{"name": ENDING_NAMES[e], "value": _rate(summary.ending_rate(e))} for e in ENDINGS],
        "escalated": summary.escalated,
        "pending": summary.pending,
        "oldest_pending": summary.oldest_pending,
    }


def starter_rows(data: Dashboard, *, agent: Agent | None = None) -> list[dict[str, Any]]:
    rows = []
    for starter in data.starters:
        rows.append(
            {
                "username": starter.username,
                "runs": starter.runs,
                "cost": money(starter.cost),
                "cost_per_run": money(starter.cost_per_run),
                # A run started by the system (no user) has no starter filter on /runs/.
                "url": runs_url(agent=agent) + ("&" if agent else "?") + urlencode({"starter": starter.username})
                if starter.username
                else "",
            }
        )
    return rows
