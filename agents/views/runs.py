"""The runs list: every run the signed-in person may read, filtered, 50 a page, newest first.

Which runs is ``agents.permissions.may_read_run``'s rule (``run_list_for_user``), so every row
links to a trace page that opens. A bad filter or page answers 400 with the page and a message
that says what to fix, and lists no runs.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import EmptyPage, InvalidPage, Page, Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.utils import timezone
from django.views.decorators.http import require_GET

from agents.models import Agent, Run, RunStatus
from agents.selectors import run_agents_for_user, run_list_for_user
from config.pages import render_page, signed_in_user

RUNS_PER_PAGE = 50
INPUT_PREVIEW_CHARS = 120
DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


class RunFilterForm(forms.Form):
    agent = forms.ChoiceField(
        required=False, error_messages={"invalid_choice": "There is no agent by that name among the agents you see."}
    )
    status = forms.ChoiceField(
        required=False,
        choices=[("", "any status"), *RunStatus.choices],
        error_messages={"invalid_choice": "Unknown status: choose one from the list."},
    )
    starter = forms.CharField(required=False, max_length=150, label="Started by")
    date_from = forms.DateField(
        required=False, label="From", widget=DATE_WIDGET, error_messages={"invalid": "From: give a date as YYYY-MM-DD."}
    )
    date_to = forms.DateField(
        required=False, label="To", widget=DATE_WIDGET, error_messages={"invalid": "To: give a date as YYYY-MM-DD."}
    )

    def __init__(self, data: QueryDict, *, agents: list[Agent]) -> None:
        super().__init__(data)
        agent_field = self.fields["agent"]
        assert isinstance(agent_field, forms.ChoiceField)
        agent_field.choices = [("", "all agents"), *((agent.slug, agent.name) for agent in agents)]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("From must be on or before To.")
        try:
            cleaned["created_from"] = _day_start(start) if start else None
            # "To" includes the whole day: runs created before the next day begins.
            cleaned["created_before"] = _day_start(end + timedelta(days=1)) if end else None
        except OverflowError:
            raise forms.ValidationError("That date is out of range.") from None
        return cleaned


def _day_start(day: date) -> datetime:
    # In UTC already, so that nothing later converts (and overflows at the ends of the calendar).
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone()).astimezone(UTC)


def _input_preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= INPUT_PREVIEW_CHARS else text[: INPUT_PREVIEW_CHARS - 1] + "…"


def _row(run: Run) -> dict[str, Any]:
    return {
        "run": run,
        "starter": run.started_by.get_username() if run.started_by else "",
        "cost": str(run.cost.normalize()) if run.cost else "0",
        "input": _input_preview(run.input),
    }


def _page_url(query: QueryDict, number: int) -> str:
    params = query.copy()
    params["page"] = str(number)
    return "?" + params.urlencode()


def _page(runs: Any, raw: str) -> tuple[Paginator[Run], Page[Run] | None, str]:
    paginator: Paginator[Run] = Paginator(runs, RUNS_PER_PAGE)
    try:
        return paginator, paginator.page(raw or "1"), ""
    except EmptyPage:
        pages = paginator.num_pages
        return paginator, None, f"There is no page {raw}: pages go from 1 to {pages}."
    except InvalidPage:
        return paginator, None, "The page number must be a whole number."


@login_required
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    agents = list(run_agents_for_user(user=user))
    form = RunFilterForm(request.GET, agents=agents)
    errors: list[str] = []
    page: Page[Run] | None = None
    paginator: Paginator[Run] | None = None
    if form.is_valid():
        data = form.cleaned_data
        runs = run_list_for_user(
            user=user,
            agent_slug=data["agent"],
            status=data["status"],
            starter=data["starter"],
            created_from=data["created_from"],
            created_before=data["created_before"],
        )
        paginator, page, page_error = _page(runs, request.GET.get("page", ""))
        if page_error:
            errors.append(page_error)
    else:
        errors = [str(message) for messages in form.errors.values() for message in messages]

    filters = request.GET.copy()
    filters.pop("page", None)
    context: dict[str, Any] = {
        "form": form,
        "agents": agents,
        "status_options": form.fields["status"].choices,  # type: ignore[attr-defined]
        "values": {name: request.GET.get(name, "") for name in form.fields},
        "errors": errors,
        "page": page,
        "rows": [_row(run) for run in page.object_list] if page is not None else [],
        "total": paginator.count if paginator is not None and page is not None else None,
        "last_page_url": _page_url(filters, paginator.num_pages) if paginator is not None else "",
    }
    if page is not None:
        context["previous_url"] = _page_url(filters, page.previous_page_number()) if page.has_previous() else ""
        context["next_url"] = _page_url(filters, page.next_page_number()) if page.has_next() else ""
    return render_page(request, "runs/list.html", context, status=400 if errors else None)
