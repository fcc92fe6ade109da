"""Datasets and evaluations on the console: start an evaluation (a task runs it), watch its
progress, read its cases, compare two side by side; make a dataset of picked runs.

Operators only; every form carries its CSRF token; case inputs, proposals and reasons are
model-written or imported text, escaped by the templates.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.eval_models import Dataset, EvalRun, EvalStatus
from agents.evaluation.datasets import cases_from_runs, dataset_import
from agents.evaluation.metrics import METRICS, compared
from agents.evaluation.runs import eval_run_create
from agents.forms import DatasetPickForm, EvalCompareForm, EvalStartForm
from agents.models import TERMINAL_RUN_STATUSES, Agent, Run
from agents.views.console import _require_operator
from config.charts import Series, grouped_bars
from config.errors import DomainError
from config.pages import pretty, render_page

RECENT = 50
SHARES = ("task_success", "proposal_accuracy", "escalation_rate", "block_rate")


def _evaluations_page(
    request: HttpRequest, *, start_form: EvalStartForm | None = None, status: int = 200
) -> HttpResponse:
    datasets = (
        Dataset.objects.select_related("agent").annotate(case_count=Count("cases")).order_by("agent__slug", "name")
    )
    runs = EvalRun.objects.select_related("agent", "dataset").order_by("-id")[:RECENT]
    return render_page(
        request,
        "console/evaluations.html",
        {
            "datasets": datasets,
            "eval_runs": runs,
            "agents": Agent.objects.order_by("slug"),
            "start_form": start_form or EvalStartForm(),
            "compare_form": EvalCompareForm(),
        },
        status=status,
    )


@login_required
@require_GET
def evaluations(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    return _evaluations_page(request)


@login_required
@require_POST
def evaluation_start(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    form = EvalStartForm(request.POST)
    if form.is_valid():
        dataset = form.cleaned_data["dataset"]
        try:
            eval_run = eval_run_create(
                agent=dataset.agent, dataset=dataset, user=request.user, version_number=form.cleaned_data["version"]
            )
        except DomainError as exc:
            form.add_error("version" if "version" in exc.details else None, exc.message)
        else:
            messages.success(request, f"Evaluation {eval_run.pk} queued: {eval_run.cases_total} cases.")
            return redirect("console-evaluation", eval_run_id=eval_run.pk)
    return _evaluations_page(request, start_form=form, status=400)


@login_required
@require_GET
def evaluation_detail(request: HttpRequest, eval_run_id: int) -> HttpResponse:
    _require_operator(request)
    eval_run = get_object_or_404(EvalRun.objects.select_related("agent", "dataset", "started_by"), pk=eval_run_id)
    results = [
        {"result": result, "proposals": pretty(result.proposals), "input": pretty(result.case.input)}
        for result in eval_run.results.select_related("case").order_by("case_id")
    ]
    return render_page(
        request,
        "console/evaluation.html",
        {
            "eval_run": eval_run,
            "results": results,
            "metrics": _metric_rows([eval_run]),
            "running": eval_run.status in (EvalStatus.QUEUED, EvalStatus.RUNNING),
            "percent": 100 * eval_run.cases_done // eval_run.cases_total if eval_run.cases_total else 0,
        },
    )


@login_required
@require_GET
def evaluation_compare(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    form = EvalCompareForm(request.GET)
    if not form.is_valid():
        return render_page(request, "console/evaluation_compare.html", {"form": form}, status=400)
    pair = [
        get_object_or_404(EvalRun.objects.select_related("agent", "dataset"), pk=form.cleaned_data[key])
        for key in ("a", "b")
    ]
    unfinished = [run.label for run in pair if run.status != EvalStatus.SUCCEEDED]
    context: dict[str, Any] = {"form": form, "pair": pair, "unfinished": unfinished}
    if not unfinished:
        a, b = (run.aggregates for run in pair)
        context["metrics"] = _metric_rows(pair)
        context["verdict"] = compared(a, b)
        context["same_dataset"] = pair[0].dataset_id == pair[1].dataset_id
        context["chart"] = grouped_bars(
            title="Evaluations side by side",
            labels=[label for key, label, _ in METRICS if key in SHARES],
            series=[
                Series(f"{run.label} {run.agent.slug}", [run.aggregates[key] for key in SHARES], css)
                for run, css in zip(pair, ("0", "succeeded"), strict=True)
            ],
            fmt=lambda value: f"{100 * value:.0f} %",
            top=1,
        )
    return render_page(request, "console/evaluation_compare.html", context, status=400 if unfinished else 200)


def _metric_rows(runs: list[EvalRun]) -> list[dict[str, Any]]:
    rows = []
    for key, label, fmt in METRICS:
        values = [run.aggregates.get(key) for run in runs]
        rows.append({"key": key, "label": label, "values": ["—" if v is None else fmt(v) for v in values]})
    return rows


@login_required
@require_http_methods(["GET", "POST"])
def dataset_pick(request: HttpRequest, slug: str) -> HttpResponse:
    """The agent's latest finished runs, to pick as cases of a dataset (made if new)."""
    _require_operator(request)
    agent = get_object_or_404(Agent, slug=slug)
    runs = list(
        Run.objects.filter(agent=agent, status__in=list(TERMINAL_RUN_STATUSES))
        .select_related("started_by")
        .order_by("-id")[:RECENT]
    )
    form = DatasetPickForm(request.POST if request.method == "POST" else None, run_ids=[run.pk for run in runs])
    if request.method == "POST" and form.is_valid():
        try:
            cases = cases_from_runs(agent=agent, run_ids=form.cleaned_data["runs"])
            dataset = dataset_import(agent=agent, name=form.cleaned_data["name"], cases=cases, user=request.user)
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"{len(cases)} cases added to dataset {dataset.name}.")
            return redirect("console-evaluations")
    status = 400 if request.method == "POST" else 200
    context = {"agent": agent, "runs": runs, "form": form}
    return render_page(request, "console/dataset_pick.html", context, status=status)
