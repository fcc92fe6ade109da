"""The run trace page: a run's steps, approvals and result, polled while the run goes on; and,
once it has finished, the feedback of its starter and reviewers."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from agents import tracing
from agents.feedback import may_give_feedback, run_feedback_give
from agents.forms import RunFeedbackForm
from agents.models import TERMINAL_RUN_STATUSES, Run
from agents.permissions import may_read_run
from agents.selectors import run_feedback_list
from config.errors import DomainError
from config.pages import KIND_LABELS, field_errors, pretty, render_page, step_view


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "status": run.status,
        "terminal": run.status in TERMINAL_RUN_STATUSES,
        "step_count": run.step_count,
        "cost": str(run.cost.normalize()) if run.cost else "0",
        "error": run.error,
        "result": pretty(run.result) if run.result is not None else "",
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
                        "arguments": pretty(decision.arguments) if decision.arguments is not None else "",
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


def _feedback_context(request: HttpRequest, run: Run, form: RunFeedbackForm | None) -> dict[str, Any]:
    given = run_feedback_list(run=run)
    mine = next((feedback for feedback in given if feedback.user_id == request.user.pk), None)
    allowed = may_give_feedback(user=request.user, run=run)
    if form is None and allowed:
        form = RunFeedbackForm(initial={"correction": mine.correction if mine else ""})
    return {
        "feedback": given,
        "my_feedback": mine,
        "may_give_feedback": allowed,
        "feedback_form": form,
        "feedback_url": reverse("run-feedback", args=[run.pk]),
    }


def _trace_page(
    request: HttpRequest, run: Run, *, feedback_form: RunFeedbackForm | None = None, status: int | None = None
) -> HttpResponse:
    steps = [step_view(step) for step in run.steps.order_by("index")]
    summary = _run_summary(run)
    state = {
        "page": "trace",
        "run": run.pk,
        "after": steps[-1]["index"] if steps else 0,
        "terminal": summary["terminal"],
        "poll_url": reverse("run-trace-json", args=[run.pk]),
    }
    return render_page(
        request,
        "runs/trace.html",
        {
            "run": run,
            "summary": summary,
            "steps": steps,
            "approvals": _run_approvals(run),
            "input_pretty": pretty(run.input),
            # What an operator looks the run up by in the trace collector, when traces are exported.
            "trace_id": tracing.run_trace_id(run) if tracing.tracing_enabled() else "",
            "state": state,
            **_feedback_context(request, run, feedback_form),
        },
        status=status,
    )


@login_required
@require_GET
def run_trace(request: HttpRequest, run_id: int) -> HttpResponse:
    return _trace_page(request, _readable_run(request, run_id))


@login_required
@require_POST
def run_feedback(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _readable_run(request, run_id)
    if not may_give_feedback(user=request.user, run=run):
        raise PermissionDenied("Only the run's starter or a reviewer of its agent may give feedback on it.")
    form = RunFeedbackForm(request.POST)
    if not form.is_valid():
        return _trace_page(request, run, feedback_form=form, status=400)
    try:
        run_feedback_give(
            run=run, user=request.user, rating=form.cleaned_data["rating"], correction=form.cleaned_data["correction"]
        )
    except DomainError as exc:
        messages_by_field = field_errors(exc.details)
        for errors in messages_by_field.values():
            for message in errors:
                form.add_error(None, message)
        if not messages_by_field:
            form.add_error(None, exc.message)
        return _trace_page(request, run, feedback_form=form, status=exc.status_code)
    messages.success(request, "Thank you: your feedback on this run is saved.")
    return redirect(reverse("run-trace", args=[run.pk]) + "#feedback")


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
