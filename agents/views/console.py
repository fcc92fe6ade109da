"""The operator console: autonomy levels, the kill switch, the emergency stop, reviewer
assignments and business rules.

Operators only. Every change goes through its audited service, with the reason given.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.forms import (
    AgentEnabledForm,
    AgentLevelForm,
    BusinessRuleForm,
    EmergencyStopForm,
    ReviewerAssignmentForm,
    RuleDeleteForm,
)
from agents.models import Agent, AutonomyLevel
from agents.operations import agent_set_enabled, agent_set_level, agents_emergency_stop
from agents.permissions import is_operator
from agents.selectors import agents_overview, review_grants_by_agent
from approvals.advisor import advice_for_agents
from approvals.models import BusinessRule
from approvals.operations import business_rule_delete, business_rule_save, reviewer_assignment_set
from approvals.selectors import alert_rules_with_state, business_rules
from config.api import DomainError
from config.pages import field_errors, render_page


def _require_operator(request: HttpRequest) -> None:
    if not is_operator(request.user):
        raise PermissionDenied("The console is for operators.")


def _console_page(
    request: HttpRequest,
    *,
    bound: dict[tuple[str, str], Any] | None = None,
    stop_form: EmergencyStopForm | None = None,
    rule_form: BusinessRuleForm | None = None,
    assignment_form: ReviewerAssignmentForm | None = None,
    status: int = 200,
) -> HttpResponse:
    bound = bound or {}
    agents = agents_overview(since=timezone.now() - timedelta(hours=24))
    assignments = review_grants_by_agent()
    advice = advice_for_agents(agents=agents)
    rows = []
    for agent in agents:
        runs = agent.runs_24h  # type: ignore[attr-defined]
        failed = agent.failed_24h  # type: ignore[attr-defined]
        grants = assignments.get(str(agent.pk), {"users": [], "groups": []})
        rows.append(
            {
                "agent": agent,
                "level_label": AutonomyLevel(agent.autonomy_level).label,
                "overrides": sorted(agent.tool_levels.items()),
                "pending": agent.pending_count,  # type: ignore[attr-defined]
                "runs_24h": runs,
                "failed_24h": failed,
                "error_rate": f"{100 * failed / runs:.0f} %" if runs else "—",
                "level_form": bound.get((agent.slug, "level"))
                or AgentLevelForm(agent=agent, initial={"level": agent.autonomy_level}),
                "enabled_form": bound.get((agent.slug, "enabled")) or AgentEnabledForm(),
                "reviewers": grants["users"],
                "reviewer_groups": grants["groups"],
                "advice": advice[agent.pk],
            }
        )
    rules = [{"rule": rule, "value": json.dumps(rule.value, ensure_ascii=False)} for rule in business_rules()]
    return render_page(
        request,
        "console/console.html",
        {
            "rows": rows,
            "rules": rules,
            "alert_rules": alert_rules_with_state(),
            "stop_form": stop_form or EmergencyStopForm(),
            "rule_form": rule_form or BusinessRuleForm(),
            "assignment_form": assignment_form or ReviewerAssignmentForm(initial={"granted": "1"}),
            "any_enabled": any(agent.enabled for agent in agents),
            "advice_count": sum(len(suggestions) for suggestions in advice.values()),
            "state": {"page": "console"},
        },
        status=status,
    )


@login_required
@require_GET
def console(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    return _console_page(request)


@login_required
@require_POST
def console_agent_level(request: HttpRequest, slug: str) -> HttpResponse:
    _require_operator(request)
    agent = get_object_or_404(Agent, slug=slug)
    form = AgentLevelForm(request.POST, agent=agent)
    if form.is_valid():
        data = form.cleaned_data
        try:
            agent_set_level(
                agent=agent, level=data["level"], user=request.user, reason=data["reason"], tool=data["tool"] or None
            )
        except DomainError as exc:
            for errors in field_errors(exc.details).values():
                for message in errors:
                    form.add_error(None, message)
            if not field_errors(exc.details):
                form.add_error(None, exc.message)
        else:
            target = f"{data['tool']} of {agent.name}" if data["tool"] else agent.name
            messages.success(request, f"Autonomy level of {target} set to {data['level']}.")
            return redirect(reverse("console") + f"#agent-{agent.slug}")
    return _console_page(request, bound={(agent.slug, "level"): form}, status=400)


@login_required
@require_POST
def console_agent_enabled(request: HttpRequest, slug: str) -> HttpResponse:
    _require_operator(request)
    agent = get_object_or_404(Agent, slug=slug)
    form = AgentEnabledForm(request.POST)
    if not form.is_valid():
        return _console_page(request, bound={(agent.slug, "enabled"): form}, status=400)
    enabled = form.cleaned_data["enabled"]
    agent_set_enabled(agent=agent, enabled=enabled, user=request.user, reason=form.cleaned_data["reason"])
    messages.success(request, f"{agent.name} {'enabled' if enabled else 'disabled (kill switch)'}.")
    return redirect(reverse("console") + f"#agent-{agent.slug}")


@login_required
@require_POST
def console_emergency_stop(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    form = EmergencyStopForm(request.POST)
    if not form.is_valid():
        return _console_page(request, stop_form=form, status=400)
    stopped = agents_emergency_stop(user=request.user, reason=form.cleaned_data["reason"])
    messages.warning(request, f"Emergency stop: {stopped} agent{'s' if stopped != 1 else ''} disabled.")
    return redirect("console")


@login_required
@require_http_methods(["GET", "POST"])
def console_rule(request: HttpRequest, rule_id: int | None = None) -> HttpResponse:
    _require_operator(request)
    rule = get_object_or_404(BusinessRule, pk=rule_id) if rule_id is not None else None
    if request.method == "GET":
        return render_page(request, "console/rule.html", {"form": BusinessRuleForm(instance=rule), "rule": rule})
    form = BusinessRuleForm(request.POST, instance=rule)
    if form.is_valid():
        try:
            rule = form.save(commit=False)
            saved = business_rule_save(rule=rule, by=request.user, reason=form.cleaned_data["reason"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Rule #{saved.pk} saved: {saved}.")
            return redirect(reverse("console") + "#rules")
    template = "console/rule.html" if rule is not None else None
    if template:
        return render_page(request, template, {"form": form, "rule": rule}, status=400)
    return _console_page(request, rule_form=form, status=400)


@login_required
@require_POST
def console_rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    _require_operator(request)
    rule = get_object_or_404(BusinessRule, pk=rule_id)
    form = RuleDeleteForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    text = str(rule)
    business_rule_delete(rule=rule, by=request.user, reason=reason)
    messages.success(request, f"Rule #{rule_id} deleted: {text}.")
    return redirect(reverse("console") + "#rules")


@login_required
@require_POST
def console_assignment(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    form = ReviewerAssignmentForm(request.POST)
    if not form.is_valid():
        return _console_page(request, assignment_form=form, status=400)
    data = form.cleaned_data
    reviewer = get_user_model().objects.get(pk=data["reviewer"].pk)  # a fresh user: no stale permission cache
    try:
        changed = reviewer_assignment_set(
            agent=data["agent"], reviewer=reviewer, granted=data["granted"], by=request.user, reason=data["reason"]
        )
    except DomainError as exc:  # SelfGrant: nobody grants review rights to themselves
        form.add_error("reviewer", exc.message)
        return _console_page(request, assignment_form=form, status=exc.status_code)
    verb = "may now review" if data["granted"] else "may no longer review"
    if changed:
        messages.success(request, f"{reviewer.get_username()} {verb} {data['agent'].name}.")
    else:
        state = "could" if data["granted"] else "could not"
        messages.info(request, f"No change: {reviewer.get_username()} already {state} review {data['agent'].name}.")
    return redirect(reverse("console") + "#assignments")
