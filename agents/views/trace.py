"""The run trace page: a run's steps, approvals and result, polled while the run goes on."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from agents import tracing
from agents.models import TERMINAL_RUN_STATUSES, Run
from agents.permissions import may_read_run
from config.pages import KIND_LABELS, pretty, render_page, step_view


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
