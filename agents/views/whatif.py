"""The policy what-if on the console: before a level or rule change is applied, the stored
proposals of the last days replayed under it (approvals.whatif), then the button that applies it.

Operators only. The preview reads and never writes: a level form's "Preview" posts here (so
its CSRF token never lands in a URL), the advisor's links and the days selector use GET.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_http_methods, require_POST

from agents.forms import BusinessRuleForm, WhatIfForm
from agents.models import Agent
from agents.views.console import _require_operator
from approvals.models import BusinessRule, Verdict
from approvals.whatif import PolicyChange, Replay, proposed_agent, whatif_replay
from config.charts import Series, stacked_bars
from config.pages import pretty, render_page

DEFAULT_DAYS = 30
VERDICT_CSS = {
    Verdict.EXECUTE: "succeeded",
    Verdict.EXECUTE_AND_REVIEW: "in_progress",
    Verdict.REQUIRE_APPROVAL: "p95",
    Verdict.BLOCK: "failed",
}


def replay_view(agent: Agent, replay: Replay) -> dict[str, Any]:
    """What the page shows of one replay: the counts, a chart of them, and the turned-down list."""
    rows = replay.rows()
    chart = stacked_bars(
        title=f"{agent.name}: {replay.proposals} proposals of the last {replay.days} days",
        labels=["policy now", "proposed"],
        series=[Series(row["words"], [row["before"], row["after"]], VERDICT_CSS[row["verdict"]]) for row in rows],
        empty="No proposals in this window.",
    )
    turned_down = [{"item": item, "arguments": pretty(item.arguments)} for item in replay.turned_down]
    return {"agent": agent, "replay": replay, "rows": rows, "chart": chart, "turned_down": turned_down}


@login_required
@require_http_methods(["GET", "POST"])
def console_agent_whatif(request: HttpRequest, slug: str) -> HttpResponse:
    _require_operator(request)
    agent = get_object_or_404(Agent, slug=slug)
    form = WhatIfForm(request.POST if request.method == "POST" else request.GET, agent=agent)
    if not form.is_valid():
        return render_page(request, "console/whatif.html", {"agent": agent, "form": form}, status=400)
    data = form.cleaned_data
    change = PolicyChange(level=data["level"], tool=data["tool"])
    problems = _level_problems(agent, change)
    replay = whatif_replay(agent=agent, change=change, days=data["days"] or DEFAULT_DAYS)
    return render_page(
        request,
        "console/whatif.html",
        {
            "agent": agent,
            "form": form,
            "change": change,
            "problems": problems,
            "views": [replay_view(agent, replay)],
            "reason": data["reason"] or f"What-if over {replay.days} days: {replay.change}",
        },
    )


@login_required
@require_POST
def console_rule_whatif(request: HttpRequest) -> HttpResponse:
    """A rule as typed in its form (new, or a change of ``rule_id``), or ``remove`` of one, replayed
    for each agent it applies to."""
    _require_operator(request)
    remove = request.POST.get("remove", "")
    rule_id = request.POST.get("rule_id", "")
    if remove:
        rule = get_object_or_404(BusinessRule, pk=_id(remove))
        change = PolicyChange(remove_rule_id=rule.pk)
        form = None
    else:
        instance = get_object_or_404(BusinessRule, pk=_id(rule_id)) if rule_id else None
        form = BusinessRuleForm(request.POST, instance=instance)
        if not form.is_valid():
            return render_page(request, "console/rule.html", {"form": form, "rule": instance}, status=400)
        rule = form.save(commit=False)
        change = PolicyChange(rule=rule)
    agents = Agent.objects.filter(Q(pk=rule.agent_id) if rule.agent_id else Q()).order_by("slug")
    views = [
        replay_view(agent, whatif_replay(agent=agent, change=change, days=DEFAULT_DAYS))
        for agent in agents
        if rule.tool in agent.tools
    ]
    context: dict[str, Any] = {
        "rule_change": change,
        "rule": rule,
        "rule_form": form,
        "views": views,
        "remove": bool(remove),
    }
    return render_page(request, "console/whatif.html", context)


def _level_problems(agent: Agent, change: PolicyChange) -> list[str]:
    """What ``Agent.clean`` would refuse of the change: shown, and the apply button withheld."""
    try:
        proposed_agent(agent, change).clean()
    except ValidationError as exc:
        return [message for messages in exc.message_dict.values() for message in messages]
    return []


def _id(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 12 else 0
