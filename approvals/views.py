"""Server-rendered pages: the reviewer inbox, the operator console and the run trace.

Views are thin: forms parse, selectors read, services write. Every decision goes through
``approval_request_decide``; every console change through its audited service.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, Max, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from guardian.models import GroupObjectPermission, UserObjectPermission

from agents.models import TERMINAL_RUN_STATUSES, Agent, AutonomyLevel, Run, RunStatus, Step
from agents.permissions import is_operator, may_read_run
from agents.services import agent_set_enabled, agent_set_level, agents_emergency_stop
from agents.tools import Risk, registry
from approvals.events import approval_payload
from approvals.forms import (
    VERDICT_LABELS,
    AgentEnabledForm,
    AgentLevelForm,
    ArgumentsForm,
    BulkDecisionForm,
    BusinessRuleForm,
    DecisionForm,
    EmergencyStopForm,
    ReviewerAssignmentForm,
    RuleDeleteForm,
)
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus, BusinessRule, InboxEvent
from approvals.selectors import agents_reviewable_by, approval_list_for_reviewer
from approvals.services import (
    VERDICTS,
    AlreadyDecided,
    approval_request_decide,
    business_rule_delete,
    business_rule_save,
    reviewer_assignment_set,
)
from config.api import DomainError

INBOX_LIMIT = 200
RISK_LABELS: dict[str, str] = {
    Risk.READ: "read-only",
    Risk.WRITE_REVERSIBLE: "write, reversible",
    Risk.WRITE_IRREVERSIBLE: "write, irreversible",
    Risk.FINANCIAL: "financial",
}
KIND_LABELS: dict[str, str] = {
    ApprovalKind.APPROVAL: "approval",
    ApprovalKind.SUGGESTION: "suggestion (level 1)",
    ApprovalKind.REVIEW: "review (level 3)",
    ApprovalKind.QUESTION: "question",
}
# The verdict the "a" key and the row's quick button give, per kind; questions need text.
PRIMARY_VERDICT: dict[str, str] = {
    ApprovalKind.APPROVAL: "approve",
    ApprovalKind.SUGGESTION: "done",
    ApprovalKind.REVIEW: "ok",
}
NEGATIVE_VERDICT: dict[str, str] = {
    ApprovalKind.APPROVAL: "reject",
    ApprovalKind.SUGGESTION: "dismiss",
    ApprovalKind.REVIEW: "flag",
    ApprovalKind.QUESTION: "reject",
}


# --- Shared -----------------------------------------------------------------------------


def _latest_seq() -> int:
    # Read before the list: an event stored after this point is replayed by the websocket.
    return InboxEvent.objects.aggregate(last=Max("id"))["last"] or 0


def _labels() -> dict[str, Any]:
    return {
        "risk": RISK_LABELS,
        "kind": KIND_LABELS,
        "verdict": VERDICT_LABELS,
        "primary": PRIMARY_VERDICT,
        "negative": NEGATIVE_VERDICT,
    }


def _render(request: HttpRequest, template: str, context: dict[str, Any], status: int | None = None) -> HttpResponse:
    context.setdefault("nav_is_operator", is_operator(request.user))
    return render(request, template, context, status=status)


def _visible_approval(user: Any, approval_id: int) -> ApprovalRequest:
    approval = (
        approval_list_for_reviewer(user=user)
        .select_related("run__started_by", "tool_call", "agent")
        .filter(pk=approval_id)
        .first()
    )
    if approval is None:
        # The same answer for "does not exist" and "not yours": ids are not an oracle.
        raise Http404("No such approval.")
    return approval


def _span(seconds: float) -> str:
    seconds = abs(int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _row(approval: ApprovalRequest) -> dict[str, Any]:
    """The inbox row: the websocket payload plus labels (the browser computes the same ones)."""
    now = timezone.now()
    payload = approval_payload(approval)
    payload["risk_label"] = RISK_LABELS.get(approval.risk_class, approval.risk_class)
    payload["kind_label"] = KIND_LABELS.get(approval.kind, approval.kind)
    payload["age_text"] = _span((now - approval.created_at).total_seconds()) + " ago" if approval.created_at else ""
    if approval.deadline is None or approval.status != ApprovalStatus.PENDING:
        payload["left_text"] = ""
    elif approval.deadline <= now:
        payload["left_text"] = "overdue"
    else:
        payload["left_text"] = _span((approval.deadline - now).total_seconds()) + " left"
    payload["primary"] = PRIMARY_VERDICT.get(ApprovalKind(approval.kind), "")
    payload["primary_label"] = VERDICT_LABELS.get(payload["primary"], "Answer")
    return payload


def _readable_arguments(arguments: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, str]]:
    properties = schema.get("properties") or {}
    rows = []
    for name, value in arguments.items():
        spec = properties.get(name, {})
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append(
            {"name": name, "label": spec.get("title") or name, "value": text, "help": spec.get("description", "")}
        )
    return rows


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=False):
        return target
    return fallback


def _decided_text(exc: DomainError) -> str:
    if isinstance(exc, AlreadyDecided) and exc.details.get("decided_by"):
        return f"Already decided: {exc.details['status']} by {exc.details['decided_by']}."
    return exc.message


# --- Inbox ---------------------------------------------------------------------------------

INBOX_FILTERS = {
    "status": [("pending", "pending"), ("", "any status")] + [(s, s) for s in ApprovalStatus.values if s != "pending"],
    "risk": [("", "any risk")] + list(RISK_LABELS.items()),
    "kind": [("", "any kind")] + list(KIND_LABELS.items()),
    "order": [("newest", "newest first"), ("urgent", "most urgent first")],
}


def _inbox_filters(query: QueryDict, agent_slugs: set[str]) -> dict[str, str]:
    filters = {"status": query.get("status", "pending"), "agent": query.get("agent", "")}
    for name in ("risk", "kind", "order"):
        filters[name] = query.get(name, "")
    for name, options in INBOX_FILTERS.items():
        if filters[name] not in {value for value, _ in options}:
            filters[name] = options[0][0]
    if filters["agent"] not in agent_slugs:
        filters["agent"] = ""
    return filters


def _inbox_page(request: HttpRequest, *, bulk_form: BulkDecisionForm | None = None, status: int = 200) -> HttpResponse:
    user = request.user
    agents = list(agents_reviewable_by(user=user).order_by("name").values("slug", "name"))
    # A refused bulk form is shown again at the list the reviewer came from, filters included,
    # and keeps pointing back there: the form's action URL answers only POST.
    back = _safe_next(request, reverse("inbox")) if request.method == "POST" else request.get_full_path()
    filters = _inbox_filters(QueryDict(urlsplit(back).query), {agent["slug"] for agent in agents})
    last_seq = _latest_seq()
    approvals = list(
        approval_list_for_reviewer(
            user=user,
            status=filters["status"] or None,
            agent=filters["agent"] or None,
            risk=filters["risk"] or None,
            kind=filters["kind"] or None,
            order=filters["order"],
        )[:INBOX_LIMIT]
    )
    pending_ids = list(
        approval_list_for_reviewer(user=user, status=ApprovalStatus.PENDING).values_list("pk", flat=True)[:5000]
    )
    selected = set(request.POST.getlist("ids")) if bulk_form is not None else set()
    state = {
        "page": "inbox",
        "last_seq": last_seq,
        "filters": filters,
        "pending_ids": pending_ids,
        "labels": _labels(),
        "ws_path": "/ws/inbox/",
        "api_decision": "/api/v1/approvals/{id}/decision/",
        "limit": INBOX_LIMIT,
    }
    return _render(
        request,
        "inbox/list.html",
        {
            "rows": [_row(approval) for approval in approvals],
            "selected": selected,
            "agents": agents,
            "filters": filters,
            "filter_options": INBOX_FILTERS,
            "pending_count": len(pending_ids),
            "bulk_form": bulk_form or BulkDecisionForm(),
            "back": back,
            "state": state,
            "bulk_verdicts": [(v, VERDICT_LABELS[v]) for v in ("approve", "reject", "done", "dismiss", "ok", "flag")],
        },
        status=status,
    )


@login_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    return _inbox_page(request)


@login_required
@require_POST
def inbox_bulk(request: HttpRequest) -> HttpResponse:
    form = BulkDecisionForm(request.POST)
    if not form.is_valid():
        return _inbox_page(request, bulk_form=form, status=400)
    data = form.cleaned_data
    approvals = {
        approval.pk: approval
        for approval in approval_list_for_reviewer(user=request.user)
        .select_related("run__started_by", "tool_call")
        .filter(pk__in=data["ids"])
    }
    done = 0
    for approval_id in dict.fromkeys(data["ids"]):
        approval = approvals.get(approval_id)
        if approval is None:
            messages.error(request, f"#{approval_id}: no such approval.")
            continue
        try:
            approval_request_decide(
                approval=approval, reviewer=request.user, verdict=data["verdict"], comment=data["comment"]
            )
        except DomainError as exc:
            messages.error(request, f"#{approval_id} {approval.tool}: {_decided_text(exc)}")
        else:
            done += 1
    if done:
        label = VERDICT_LABELS[data["verdict"]].lower()
        messages.success(request, f"{label.capitalize()}: {done} item{'s' if done != 1 else ''}.")
    return redirect(_safe_next(request, reverse("inbox")))


def _detail_context(
    request: HttpRequest,
    approval: ApprovalRequest,
    *,
    posted_verdict: str = "",
    comment: str = "",
    arguments_form: ArgumentsForm | None = None,
    arguments_json: str = "",
    edit_mode: str = "fields",
    error: str = "",
    kept_arguments: Any = None,
) -> dict[str, Any]:
    tool = registry.get(approval.tool)
    schema = tool.input_schema() if tool else {}
    current = approval.decided_arguments or approval.arguments
    if arguments_form is None:
        arguments_form = ArgumentsForm(schema=schema, initial=ArgumentsForm.initial_from(current, schema))
    steps = list(approval.run.steps.order_by("index"))
    decisions = list(approval.decisions.select_related("reviewer"))
    verdicts = VERDICTS[ApprovalKind(approval.kind)]
    pending_ids = list(
        approval_list_for_reviewer(user=request.user, status=ApprovalStatus.PENDING).values_list("pk", flat=True)[:5000]
    )
    state = {
        "page": "detail",
        "pending_ids": pending_ids,
        "approval": approval.pk,
        "status": approval.status,
        "last_seq": _latest_seq(),
        "proposed": approval.arguments,
        "ws_path": "/ws/inbox/",
        "labels": _labels(),
        "inbox_url": reverse("inbox"),
    }
    return {
        "approval": approval,
        "row": _row(approval),
        "run": approval.run,
        "agent": approval.agent,
        "steps": [step_view(step) for step in steps],
        "decisions": decisions,
        "schema": schema,
        "arguments_form": arguments_form,
        "arguments_pretty": json.dumps(approval.arguments, indent=2, ensure_ascii=False, sort_keys=True),
        "arguments_readable": _readable_arguments(approval.arguments, schema),
        "decided_readable": _readable_arguments(approval.decided_arguments or {}, schema),
        "decided_pretty": json.dumps(approval.decided_arguments, indent=2, ensure_ascii=False, sort_keys=True)
        if approval.decided_arguments is not None
        else "",
        "arguments_json": arguments_json or json.dumps(current, indent=2, ensure_ascii=False),
        "edit_mode": edit_mode,
        "is_pending": approval.status == ApprovalStatus.PENDING,
        "verdicts": verdicts,
        "can_edit": "edit" in verdicts,
        "primary_verdict": PRIMARY_VERDICT.get(ApprovalKind(approval.kind), ""),
        "negative_verdict": NEGATIVE_VERDICT[ApprovalKind(approval.kind)],
        "verdict_labels": VERDICT_LABELS,
        "posted_verdict": posted_verdict,
        "comment": comment,
        "error": error,
        "kept_arguments": _pretty(kept_arguments) if kept_arguments is not None else "",
        "state": state,
        "pending_count": len(pending_ids),
    }


def _field_errors(details: dict[str, Any]) -> dict[str, list[str]]:
    errors = details.get("errors") or {}
    return {str(key): [str(m) for m in value] for key, value in errors.items()} if isinstance(errors, dict) else {}


@login_required
@require_http_methods(["GET", "POST"])
def inbox_detail(request: HttpRequest, approval_id: int) -> HttpResponse:
    approval = _visible_approval(request.user, approval_id)
    if request.method == "GET":
        return _render(request, "inbox/detail.html", _detail_context(request, approval))

    form = DecisionForm(request.POST)
    tool = registry.get(approval.tool)
    schema = tool.input_schema() if tool else {}
    if not form.is_valid():
        return _render(
            request,
            "inbox/detail.html",
            _detail_context(request, approval, error="The decision could not be read: " + form.errors.as_text()),
            status=400,
        )
    verdict = form.cleaned_data["verdict"]
    comment = form.cleaned_data["comment"]
    edit_mode = form.cleaned_data.get("edit_mode") or "fields"
    arguments_json = form.cleaned_data.get("arguments_json") or ""
    kept: dict[str, Any] = {"posted_verdict": verdict, "comment": comment, "edit_mode": edit_mode}
    arguments = None
    arguments_form = None
    if verdict == "edit":
        arguments_form = ArgumentsForm(request.POST, schema=schema)
        kept.update(arguments_form=arguments_form, arguments_json=arguments_json)
        if edit_mode == "json":
            arguments_form.is_valid()  # keeps the typed field values on the page
            try:
                arguments = json.loads(arguments_json)
            except ValueError as exc:
                context = _detail_context(request, approval, error=f"The JSON is not valid: {exc}.", **kept)
                return _render(request, "inbox/detail.html", context, status=400)
        else:
            if arguments_form.is_valid():
                arguments = arguments_form.arguments()
            if not arguments_form.is_valid() or arguments_form.errors:
                context = _detail_context(request, approval, error="Some edited arguments are not valid.", **kept)
                return _render(request, "inbox/detail.html", context, status=400)
    try:
        approval_request_decide(
            approval=approval,
            reviewer=request.user,
            verdict=verdict,
            arguments=arguments,
            comment=comment,
            arguments_hash=form.cleaned_data.get("arguments_hash") or None,
        )
    except DomainError as exc:
        field_errors = _field_errors(exc.details)
        if arguments_form is not None:
            for name, errors in field_errors.items():
                target = name if name in arguments_form.fields else None
                for message in errors:
                    arguments_form.add_error(target, message)
        context = _detail_context(request, approval, error=_decided_text(exc), kept_arguments=arguments, **kept)
        return _render(request, "inbox/detail.html", context, status=exc.status_code)
    label = VERDICT_LABELS[verdict]
    messages.success(request, f"{label}: #{approval.pk} {approval.tool} ({approval.agent.name}).")
    return redirect(_safe_next(request, reverse("inbox")))


# --- Run trace -----------------------------------------------------------------------------


def _pretty(value: Any) -> str:
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
        blocks.append({"label": label, "text": _pretty(value) if code else str(value), "code": code})

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


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "status": run.status,
        "terminal": run.status in TERMINAL_RUN_STATUSES,
        "step_count": run.step_count,
        "cost": str(run.cost.normalize()) if run.cost else "0",
        "error": run.error,
        "result": _pretty(run.result) if run.result is not None else "",
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _run_approvals(run: Run) -> list[dict[str, Any]]:
    rows = []
    for approval in run.approvals.select_related("decided_by").prefetch_related("decisions__reviewer").order_by("id"):
        rows.append(
            {
                "id": approval.pk,
                "tool": approval.tool,
                "kind": KIND_LABELS.get(approval.kind, approval.kind),
                "status": approval.status,
                "policy_reason": approval.policy_reason,
                "decided_by": approval.decided_by.get_username() if approval.decided_by else "",
                "decisions": [
                    {
                        "reviewer": decision.reviewer.get_username(),
                        "verdict": decision.verdict,
                        "comment": decision.comment,
                        "arguments": _pretty(decision.arguments) if decision.arguments is not None else "",
                        "time": timezone.localtime(decision.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    }
                    for decision in approval.decisions.all()
                ],
            }
        )
    return rows


def _readable_run(request: HttpRequest, run_id: int) -> Run:
    run = Run.objects.select_related("agent", "started_by").filter(pk=run_id).first()
    if run is None or not may_read_run(user=request.user, run=run):
        raise Http404("No such run.")
    return run


@login_required
@require_GET
def run_trace(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _readable_run(request, run_id)
    steps = [step_view(step) for step in run.steps.order_by("index")]
    summary = _run_summary(run)
    state = {
        "page": "trace",
        "run": run.pk,
        "after": steps[-1]["index"] if steps else 0,
        "terminal": summary["terminal"],
        "poll_url": reverse("run-trace-json", args=[run.pk]),
    }
    return _render(
        request,
        "runs/trace.html",
        {
            "run": run,
            "summary": summary,
            "steps": steps,
            "approvals": _run_approvals(run),
            "input_pretty": _pretty(run.input),
            "state": state,
        },
    )


@login_required
@require_GET
def run_trace_json(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _readable_run(request, run_id)
    try:
        after = max(int(request.GET.get("after", "0")), 0)
    except ValueError:
        after = 0
    steps = [step_view(step) for step in run.steps.filter(index__gt=after).order_by("index")]
    return JsonResponse({"run": _run_summary(run), "steps": steps, "approvals": _run_approvals(run)})


# --- Operator console ----------------------------------------------------------------------


def _require_operator(request: HttpRequest) -> None:
    if not is_operator(request.user):
        raise PermissionDenied("The console is for operators.")


def console_agents() -> list[Agent]:
    """Agents with pending approvals and last-24-hour run counts, in one query (subqueries)."""
    since = timezone.now() - timedelta(hours=24)

    def count(queryset: Any) -> Coalesce:
        grouped = queryset.order_by().values("agent").annotate(n=Count("pk")).values("n")
        return Coalesce(Subquery(grouped, output_field=IntegerField()), Value(0))

    pending = ApprovalRequest.objects.filter(agent=OuterRef("pk"), status=ApprovalStatus.PENDING)
    recent = Run.objects.filter(agent=OuterRef("pk"), created_at__gte=since)
    return list(
        Agent.objects.annotate(
            pending_count=count(pending),
            runs_24h=count(recent),
            failed_24h=count(recent.filter(status=RunStatus.FAILED)),
        ).order_by("slug")
    )


def _assignments() -> dict[str, Any]:
    agent_type = ContentType.objects.get_for_model(Agent)
    users = (
        UserObjectPermission.objects.filter(content_type=agent_type, permission__codename="review_agent")
        .select_related("user")
        .order_by("object_pk", "user__username")
    )
    groups = (
        GroupObjectPermission.objects.filter(content_type=agent_type, permission__codename="review_agent")
        .select_related("group")
        .order_by("object_pk", "group__name")
    )
    by_agent: dict[str, dict[str, list[str]]] = {}
    for grant in users:
        by_agent.setdefault(str(grant.object_pk), {"users": [], "groups": []})["users"].append(grant.user.username)
    for group_grant in groups:
        by_agent.setdefault(str(group_grant.object_pk), {"users": [], "groups": []})["groups"].append(
            group_grant.group.name
        )
    return by_agent


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
    agents = console_agents()
    assignments = _assignments()
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
            }
        )
    rules = [
        {"rule": rule, "value": json.dumps(rule.value, ensure_ascii=False)}
        for rule in BusinessRule.objects.select_related("agent").order_by("tool", "id")
    ]
    return _render(
        request,
        "console/console.html",
        {
            "rows": rows,
            "rules": rules,
            "stop_form": stop_form or EmergencyStopForm(),
            "rule_form": rule_form or BusinessRuleForm(),
            "assignment_form": assignment_form or ReviewerAssignmentForm(initial={"granted": "1"}),
            "any_enabled": any(agent.enabled for agent in agents),
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
            for errors in _field_errors(exc.details).values():
                for message in errors:
                    form.add_error(None, message)
            if not _field_errors(exc.details):
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
        return _render(request, "console/rule.html", {"form": BusinessRuleForm(instance=rule), "rule": rule})
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
        return _render(request, template, {"form": form, "rule": rule}, status=400)
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
    changed = reviewer_assignment_set(
        agent=data["agent"], reviewer=reviewer, granted=data["granted"], by=request.user, reason=data["reason"]
    )
    verb = "may now review" if data["granted"] else "may no longer review"
    if changed:
        messages.success(request, f"{reviewer.get_username()} {verb} {data['agent'].name}.")
    else:
        state = "could" if data["granted"] else "could not"
        messages.info(request, f"No change: {reviewer.get_username()} already {state} review {data['agent'].name}.")
    return redirect(reverse("console") + "#assignments")
