"""The dashboard: runs, cost, step latency and approvals over a window, as charts and tables;
one page for every agent and one per agent.

Operators and auditors only (``may_see_dashboard``); anyone else gets 403, and a visitor who
is not signed in the sign-in page. The window is a GET parameter (``24h``, ``7d``, ``30d``); an
unknown one answers 400 with the page and a message, as a bad filter on /runs/ does.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from agents.dashboard import (
    DEFAULT_WINDOW,
    WINDOWS,
    Window,
    agent_pending_approvals,
    agent_recent_failures,
    dashboard_for,
)
from agents.models import Agent, AutonomyLevel, RunStatus
from agents.permissions import may_see_dashboard
from agents.views.dashboard_charts import agent_row, charts, money, runs_url, starter_rows
from config.pages import KIND_LABELS, render_page


def _require_reader(request: HttpRequest) -> None:
    if not may_see_dashboard(request.user):
        raise PermissionDenied("The dashboard is for operators and auditors.")


def _window(request: HttpRequest) -> tuple[Window | None, str]:
    key = request.GET.get("window", DEFAULT_WINDOW)
    if key in WINDOWS:
        return WINDOWS[key], ""
    return None, "Unknown window: choose one of " + ", ".join(WINDOWS) + "."


def _base(request: HttpRequest, window: Window | None, error: str) -> dict[str, Any]:
    return {
        "windows": [{"key": w.key, "label": w.label, "current": w is window} for w in WINDOWS.values()],
        "window": window,
        "errors": [error] if error else [],
    }


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    _require_reader(request)
    window, error = _window(request)
    context = _base(request, window, error)
    if window is None:
        return render_page(request, "dashboard/index.html", context, status=400)
    data = dashboard_for(window=window)
    context.update(
        charts=charts(data),
        agents=[agent_row(summary) for summary in data.agents],
        starters=starter_rows(data),
        total_runs=data.total_runs,
        total_cost=money(data.total_cost),
        pending=data.pending,
        failed=sum(data.runs[RunStatus.FAILED]),
        failed_url=runs_url(status=RunStatus.FAILED),
    )
    return render_page(request, "dashboard/index.html", context)


@login_required
@require_GET
def dashboard_agent(request: HttpRequest, slug: str) -> HttpResponse:
    _require_reader(request)
    agent = get_object_or_404(Agent, slug=slug)
    window, error = _window(request)
    context = _base(request, window, error)
    context["agent"] = agent
    context["level_label"] = AutonomyLevel(agent.autonomy_level).label
    if window is None:
        return render_page(request, "dashboard/agent.html", context, status=400)
    data = dashboard_for(window=window, agent=agent)
    (summary,) = data.agents
    context.update(
        charts=charts(data, agent=agent),
        row=agent_row(summary),
        starters=starter_rows(data, agent=agent),
        failures=[
            {"run": run, "cost": money(run.cost)} for run in agent_recent_failures(agent=agent, since=data.since)
        ],
        pending=[
            {"approval": approval, "kind": KIND_LABELS.get(approval.kind, approval.kind)}
            for approval in agent_pending_approvals(agent=agent)
        ],
    )
    return render_page(request, "dashboard/agent.html", context)
