"""Helpers shared by the server-rendered pages of several apps (inbox, run trace, console).

Presentation only: they render, redirect and format. Pages import them; nothing here
imports a views module.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from agents.models import Step
from agents.permissions import is_operator, may_see_dashboard
from approvals.models import ApprovalKind

KIND_LABELS: dict[str, str] = {
    ApprovalKind.APPROVAL: "approval",
    ApprovalKind.SUGGESTION: "suggestion (level 1)",
    ApprovalKind.REVIEW: "review (level 3)",
    ApprovalKind.QUESTION: "question",
}


def signed_in_user(request: HttpRequest) -> User:
    """The user of a page behind ``login_required``: the user model, never the anonymous user."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDenied("Sign in first.")
    return user


def render_page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int | None = None
) -> HttpResponse:
    context.setdefault("nav_is_operator", is_operator(request.user))
    context.setdefault("nav_dashboard", may_see_dashboard(request.user))
    return render(request, template, context, status=status)


def safe_next(request: HttpRequest, fallback: str) -> str:
    """The posted ``next`` URL when it stays on this site, otherwise ``fallback``."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=False):
        return target
    return fallback


def field_errors(details: dict[str, Any]) -> dict[str, list[str]]:
    """The per-field messages of a ``DomainError``'s details, as strings."""
    errors = details.get("errors") or {}
    return {str(key): [str(m) for m in value] for key, value in errors.items()} if isinstance(errors, dict) else {}


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def step_view(step: Step) -> dict[str, Any]:
    """A step as the timeline shows it: a title, badges and labelled blocks (text or JSON).

    The page renders it with the template and live updates render the same dict in the
    browser, so both show the same thing.
    """
    data = step.input or {}
    blocks: list[dict[str, Any]] = []

    def add(label: str, value: Any, *, code: bool = False) -> None:
        if value in (None, "", {}, []):
            return
        blocks.append({"label": label, "text": pretty(value) if code else str(value), "code": code})

    if step.kind == Step.Kind.REASONING:
        proposal = data.get("proposal", "")
        if proposal == "tool":
            title = f"Reasoning: proposes {data.get('tool')}"
        elif proposal == "final":
            title = "Reasoning: final answer"
        else:
            title = f"Reasoning: {proposal or 'no'} proposal"
        add("Rationale", data.get("rationale"))
        add("Transcript", data.get("transcript"), code=True)
        add("Answer", (step.output or {}).get("answer") if isinstance(step.output, dict) else step.output, code=True)
    elif step.kind == Step.Kind.TOOL_CALL:
        title = f"Tool call: {data.get('tool', '')}"
        add("Arguments", data.get("arguments"), code=True)
        add("Rationale", data.get("rationale"))
        policy = data.get("policy") or {}
        if policy.get("guardrails"):
            add("Guardrails", policy["guardrails"], code=True)
    elif step.kind == Step.Kind.OBSERVATION:
        title = f"Observation: {data.get('tool', '')} {data.get('status', '')}".strip()
        add("Output", step.output, code=True)
    else:
        reviewer = data.get("reviewer") or "the system"
        title = f"Decision: {data.get('tool', '')} {data.get('status', '')} by {reviewer}"
        add("Comment", data.get("comment"))
        add("Approved arguments (edited)" if data.get("arguments") else "Arguments", data.get("arguments"), code=True)
        add("Outcome", step.output, code=True)
    add("Error", step.error)
    return {
        "index": step.index,
        "kind": step.kind,
        "title": title,
        "time": timezone.localtime(step.created_at).strftime("%H:%M:%S") if step.created_at else "",
        "created_at": step.created_at.isoformat() if step.created_at else None,
        "verdict": step.verdict,
        "verdict_reason": step.verdict_reason,
        "latency_ms": step.latency_ms,
        "tokens": step.prompt_tokens + step.completion_tokens,
        "prompt_tokens": step.prompt_tokens,
        "completion_tokens": step.completion_tokens,
        "cost": str(step.cost.normalize()) if step.cost else "0",
        "blocks": blocks,
    }
