"""The reviewer inbox: the list of approvals, bulk decisions and one approval's page.

Views are thin: forms parse, selectors read, services write. Every decision goes through
``approval_request_decide``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.tools import Risk, registry
from approvals.decisions import AlreadyDecided, approval_request_decide
from approvals.events import approval_payload
from approvals.forms import (
    VERDICT_LABELS,
    ArgumentsForm,
    BulkDecisionForm,
    DecisionForm,
    arguments_from_json,
    json_refusal_text,
)
from approvals.models import (
    BULK_VERDICTS,
    KIND_VERDICTS,
    ApprovalKind,
    ApprovalRequest,
    ApprovalStatus,
    DecisionVerdict,
    InboxEvent,
)
from approvals.selectors import agents_reviewable_by, approval_list_for_reviewer
from config.api import DomainError
from config.errors import JSONRefused
from config.pages import KIND_LABELS, field_errors, pretty, render_page, safe_next, signed_in_user, step_view

INBOX_LIMIT = 200
RISK_LABELS: dict[str, str] = {
    Risk.READ: "read-only",
    Risk.WRITE_REVERSIBLE: "write, reversible",
    Risk.WRITE_IRREVERSIBLE: "write, irreversible",
    Risk.FINANCIAL: "financial",
}
# The verdict the "a" key and the row's quick button give, per kind; questions need text.
PRIMARY_VERDICT: dict[str, DecisionVerdict] = {
    ApprovalKind.APPROVAL: DecisionVerdict.APPROVE,
    ApprovalKind.SUGGESTION: DecisionVerdict.DONE,
    ApprovalKind.REVIEW: DecisionVerdict.OK,
}
NEGATIVE_VERDICT: dict[str, DecisionVerdict] = {
    ApprovalKind.APPROVAL: DecisionVerdict.REJECT,
    ApprovalKind.SUGGESTION: DecisionVerdict.DISMISS,
    ApprovalKind.REVIEW: DecisionVerdict.FLAG,
    ApprovalKind.QUESTION: DecisionVerdict.REJECT,
}


# --- Rows and labels ----------------------------------------------------------------------


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


class _IdPaths:
    """``reverse(name, args=[pk])`` for every row of a page at the cost of one ``reverse``: the
    path is reversed once with a stand-in id and split around it (``{% url %}`` twice a row
    was a sixth of the inbox's rendering time)."""

    STAND_IN = 9_876_543_210

    def __init__(self, name: str) -> None:
        self.head, self.tail = reverse(name, args=[self.STAND_IN]).split(str(self.STAND_IN))

    def __call__(self, pk: int) -> str:
        return f"{self.head}{int(pk)}{self.tail}"


def _row(approval: ApprovalRequest, *, detail_path: _IdPaths, run_path: _IdPaths) -> dict[str, Any]:
    """The inbox row: the websocket payload plus labels and links (the browser computes the same ones)."""
    now = timezone.now()
    payload = approval_payload(approval)
    payload["detail_url"] = detail_path(approval.pk)
    payload["run_url"] = run_path(approval.run_id)
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


def _decided_text(exc: DomainError) -> str:
    if isinstance(exc, AlreadyDecided) and exc.details.get("decided_by"):
        return f"Already decided: {exc.details['status']} by {exc.details['decided_by']}."
    return exc.message


# --- Pages ---------------------------------------------------------------------------------

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
    back = safe_next(request, reverse("inbox")) if request.method == "POST" else request.get_full_path()
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
    detail_path, run_path = _IdPaths("inbox-detail"), _IdPaths("run-trace")
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
    return render_page(
        request,
        "inbox/list.html",
        {
            "rows": [_row(approval, detail_path=detail_path, run_path=run_path) for approval in approvals],
            "selected": selected,
            "agents": agents,
            "filters": filters,
            "filter_options": INBOX_FILTERS,
            "pending_count": len(pending_ids),
            "bulk_form": bulk_form or BulkDecisionForm(),
            "back": back,
            "state": state,
            "bulk_verdicts": [(v, VERDICT_LABELS[v]) for v in BULK_VERDICTS],
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
                approval=approval, reviewer=signed_in_user(request), verdict=data["verdict"], comment=data["comment"]
            )
        except DomainError as exc:
            messages.error(request, f"#{approval_id} {approval.tool}: {_decided_text(exc)}")
        else:
            done += 1
    if done:
        label = VERDICT_LABELS[data["verdict"]].lower()
        messages.success(request, f"{label.capitalize()}: {done} item{'s' if done != 1 else ''}.")
    return redirect(safe_next(request, reverse("inbox")))


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
    verdicts = KIND_VERDICTS[ApprovalKind(approval.kind)]
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
        "row": _row(approval, detail_path=_IdPaths("inbox-detail"), run_path=_IdPaths("run-trace")),
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
        "can_edit": DecisionVerdict.EDIT in verdicts,
        "primary_verdict": PRIMARY_VERDICT.get(ApprovalKind(approval.kind), ""),
        "negative_verdict": NEGATIVE_VERDICT[ApprovalKind(approval.kind)],
        "verdict_labels": VERDICT_LABELS,
        "posted_verdict": posted_verdict,
        "comment": comment,
        "error": error,
        "kept_arguments": pretty(kept_arguments) if kept_arguments is not None else "",
        "state": state,
        "pending_count": len(pending_ids),
    }


@login_required
@require_http_methods(["GET", "POST"])
def inbox_detail(request: HttpRequest, approval_id: int) -> HttpResponse:
    approval = _visible_approval(request.user, approval_id)
    if request.method == "GET":
        return render_page(request, "inbox/detail.html", _detail_context(request, approval))

    form = DecisionForm(request.POST)
    tool = registry.get(approval.tool)
    schema = tool.input_schema() if tool else {}
    if not form.is_valid():
        return render_page(
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
    if verdict == DecisionVerdict.EDIT:
        arguments_form = ArgumentsForm(request.POST, schema=schema)
        kept.update(arguments_form=arguments_form, arguments_json=arguments_json)
        if edit_mode == "json":
            arguments_form.is_valid()  # keeps the typed field values on the page
            try:
                arguments = arguments_from_json(arguments_json)
            except JSONRefused as exc:
                context = _detail_context(request, approval, error=json_refusal_text(exc), **kept)
                return render_page(request, "inbox/detail.html", context, status=400)
        else:
            if arguments_form.is_valid():
                arguments = arguments_form.arguments()
            if not arguments_form.is_valid() or arguments_form.errors:
                context = _detail_context(request, approval, error="Some edited arguments are not valid.", **kept)
                return render_page(request, "inbox/detail.html", context, status=400)
    try:
        approval_request_decide(
            approval=approval,
            reviewer=signed_in_user(request),
            verdict=verdict,
            arguments=arguments,
            comment=comment,
            arguments_hash=form.cleaned_data.get("arguments_hash") or None,
        )
    except DomainError as exc:
        errors_by_field = field_errors(exc.details)
        if arguments_form is not None:
            for name, errors in errors_by_field.items():
                target = name if name in arguments_form.fields else None
                for message in errors:
                    arguments_form.add_error(target, message)
        context = _detail_context(request, approval, error=_decided_text(exc), kept_arguments=arguments, **kept)
        return render_page(request, "inbox/detail.html", context, status=exc.status_code)
    label = VERDICT_LABELS[verdict]
    messages.success(request, f"{label}: #{approval.pk} {approval.tool} ({approval.agent.name}).")
    return redirect(safe_next(request, reverse("inbox")))
