"""The versions page of the operator console: an agent's versions with their diffs, the canary
comparison, and the audited moves (rollback, a new candidate, start, promote or roll back a canary).

Operators only; every form posts with CSRF and a reason, and goes through agents.versions or agents.rollout.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from agents.models import Agent, AgentVersion
from agents.rollout import canary_compare, canary_promote, canary_rollback, canary_start
from agents.version_forms import CanaryDecisionForm, CanaryStartForm, VersionCandidateForm, VersionChoiceForm
from agents.version_stats import VersionRates
from agents.versions import behaviour_snapshot, version_create, version_rollback, versions_of
from agents.views.console import _require_operator
from config.errors import DomainError
from config.pages import field_errors, pretty, render_page

METRICS = [
    ("runs", "Runs", "runs"),
    ("decisions", "Decisions", "decisions"),
    ("rejection_rate", "Rejection rate", "rejections"),
    ("edit_rate", "Edit rate", "edits"),
    ("incident_rate", "Incidents per run", "incidents"),
    ("failure_rate", "Failure rate", "failures"),
    ("cost_per_run", "Cost per run", None),
]


def _cell(rates: VersionRates | None, attr: str, count: str | None) -> str:
    if rates is None:
        return "—"
    value = getattr(rates, attr)
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.0%} ({getattr(rates, count)})" if count else f"{value:.0%}"
    return str(value)


def _version_row(version: AgentVersion, agent: Agent) -> dict[str, Any]:
    return {
        "version": version,
        "is_current": version.pk == agent.current_version_id,
        "is_candidate": version.pk == agent.candidate_version_id,
        "behaviour": pretty(version.behaviour),
        "diff": [
            {"field": name, "old": pretty(change.get("old")), "new": pretty(change.get("new"))}
            for name, change in sorted(version.diff.items())
        ],
    }


def _page(
    request: HttpRequest, agent: Agent, *, bound: dict[str, forms.Form] | None = None, status: int = 200
) -> HttpResponse:
    bound = bound or {}
    comparison = canary_compare(agent=agent)
    rows = [
        {
            "label": label,
            "current": _cell(comparison.current, attr, count),
            "candidate": _cell(comparison.candidate, attr, count),
        }
        for attr, label, count in METRICS
    ]
    context = {
        "agent": agent,
        "versions": [_version_row(version, agent) for version in versions_of(agent)],
        "comparison": comparison,
        "metrics": rows,
        "rollback_form": bound.get("rollback") or VersionChoiceForm(),
        "canary_form": bound.get("canary") or CanaryStartForm(initial={"share": 10}),
        "decision_form": bound.get("decision") or CanaryDecisionForm(),
        "candidate_form": bound.get("candidate")
        or VersionCandidateForm(initial={"behaviour": pretty(behaviour_snapshot(agent))}),
        "state": {"page": "console"},
    }
    return render_page(request, "console/versions.html", context, status=status)


def _agent(request: HttpRequest, slug: str) -> Agent:
    _require_operator(request)
    return get_object_or_404(Agent.objects.select_related("current_version", "candidate_version"), slug=slug)


def _refused(request: HttpRequest, agent: Agent, key: str, form: forms.Form, exc: DomainError) -> HttpResponse:
    errors = field_errors(exc.details)
    for field, messages_ in errors.items():
        for message in messages_:
            form.add_error(None, f"{field}: {message}")
    if not errors:
        form.add_error(None, exc.message)
    return _page(request, agent, bound={key: form}, status=exc.status_code)


def _done(request: HttpRequest, agent: Agent, message: str) -> HttpResponse:
    messages.success(request, message)
    return redirect("console-agent-versions", slug=agent.slug)


def _version(agent: Agent, number: int) -> AgentVersion:
    return get_object_or_404(AgentVersion, agent=agent, number=number)


@login_required
@require_GET
def agent_versions(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, _agent(request, slug))


@login_required
@require_POST
def agent_version_rollback(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent(request, slug)
    form = VersionChoiceForm(request.POST)
    if not form.is_valid():
        return _page(request, agent, bound={"rollback": form}, status=400)
    version = _version(agent, form.cleaned_data["version"])
    try:
        version_rollback(agent=agent, version=version, user=request.user, reason=form.cleaned_data["reason"])
    except DomainError as exc:
        return _refused(request, agent, "rollback", form, exc)
    return _done(request, agent, f"Version {version.number} of {agent.name} is current again.")


@login_required
@require_POST
def agent_version_candidate(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent(request, slug)
    form = VersionCandidateForm(request.POST)
    if not form.is_valid():
        return _page(request, agent, bound={"candidate": form}, status=400)
    data = form.cleaned_data
    try:
        version = version_create(
            agent=agent, author=request.user, reason=data["reason"], behaviour=data["behaviour"], candidate=True
        )
    except DomainError as exc:
        return _refused(request, agent, "candidate", form, exc)
    return _done(request, agent, f"Version {version.number} made as the candidate; give it a canary share.")


@login_required
@require_POST
def agent_canary_start(request: HttpRequest, slug: str) -> HttpResponse:
    agent = _agent(request, slug)
    form = CanaryStartForm(request.POST)
    if not form.is_valid():
        return _page(request, agent, bound={"canary": form}, status=400)
    data = form.cleaned_data
    version = _version(agent, data["version"])
    try:
        canary_start(agent=agent, version=version, share=data["share"], user=request.user, reason=data["reason"])
    except DomainError as exc:
        return _refused(request, agent, "canary", form, exc)
    return _done(request, agent, f"Version {version.number} takes {data['share']} % of new runs.")


@login_required
@require_POST
def agent_canary_decide(request: HttpRequest, slug: str, move: str) -> HttpResponse:
    agent = _agent(request, slug)
    form = CanaryDecisionForm(request.POST)
    if not form.is_valid():
        return _page(request, agent, bound={"decision": form}, status=400)
    reason = form.cleaned_data["reason"]
    try:
        if move == "promote":
            canary_promote(agent=agent, user=request.user, reason=reason)
        else:
            canary_rollback(agent=agent, user=request.user, reason=reason)
    except DomainError as exc:
        return _refused(request, agent, "decision", form, exc)
    verb = "promoted: it is current" if move == "promote" else "rolled back: new runs take the current version"
    return _done(request, agent, f"The candidate of {agent.name} was {verb}.")
