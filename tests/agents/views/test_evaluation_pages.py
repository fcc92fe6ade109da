"""The console's evaluation and what-if pages: operators only, CSRF, bad input, escaping."""

from __future__ import annotations

import pytest

from agents.eval_models import Dataset, DatasetCase, EvalRun
from agents.evaluation.datasets import cases_from_yaml, dataset_import
from agents.evaluation.runs import eval_run_execute
from agents.models import Agent
from approvals.models import BusinessRule
from tests.agents.feedback_runs import run_finished
from tests.approvals.whatif_scenario import scenario_make
from tests.pages import client_for

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def rung(monkeypatch) -> list[tuple[str, tuple[int, ...]]]:
    """The evaluate task's doorbell, recorded instead of published."""
    from config import doorbell

    calls: list[tuple[str, tuple[int, ...]]] = []
    monkeypatch.setattr(doorbell, "send", lambda name, *args, **kwargs: calls.append((name, args)) or True)
    return calls


@pytest.fixture
def dataset(support_agent, starter) -> Dataset:
    cases = cases_from_yaml(
        f"- name: '{HOSTILE}'\n  input: {{ticket_id: 1, customer_email: a@example.com, amount: 50, currency: USD}}\n"
        "  expected_calls: [{tool: issue_refund, arguments: {amount: {range: [0, 10]}}}]\n"
    )
    return dataset_import(agent=support_agent, name="small", cases=cases, user=starter)


PAGES = ["/console/evaluations/", "/console/evaluations/compare/?a=1&b=2", "/console/agents/support/whatif/?level=3"]


def test_for_operators_only(support_agent, dataset, assigned_reviewer, outsider, client):
    for user in (assigned_reviewer, outsider):
        for page in [*PAGES, "/console/agents/support/dataset-from-runs/"]:
            assert client_for(user).get(page).status_code == 403, page
        response = client_for(user).post("/console/evaluations/start/", {"dataset": dataset.pk})
        assert response.status_code == 403
    assert client.get(PAGES[0]).status_code == 302  # to the sign-in page
    assert not EvalRun.objects.exists()


def test_forms_need_csrf(support_agent, dataset, operator):
    client = client_for(operator, csrf=True)
    assert client.post("/console/evaluations/start/", {"dataset": dataset.pk}).status_code == 403
    assert client.post("/console/agents/support/whatif/", {"level": "3"}).status_code == 403
    assert client.post("/console/rules/whatif/", {"remove": "1"}).status_code == 403
    assert not EvalRun.objects.exists()


def test_start_watch_and_compare(support_agent, dataset, starter, rung):
    client = client_for(starter)
    response = client.post("/console/evaluations/start/", {"dataset": dataset.pk})
    eval_run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/console/evaluations/{eval_run.pk}/"
    page = client.get(response["Location"])
    assert 'http-equiv="refresh"' in page.text and "0 of 1 cases" in page.text

    eval_run_execute(eval_run_id=eval_run.pk)
    second = client.post("/console/evaluations/start/", {"dataset": dataset.pk})
    assert second.status_code == 302
    eval_run_execute(eval_run_id=EvalRun.objects.latest("id").pk)

    page = client.get(f"/console/evaluations/{eval_run.pk}/")
    assert page.status_code == 200 and 'http-equiv="refresh"' not in page.text
    assert HOSTILE not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "expected issue_refund: amount 50.0 is not in [0, 10]" in page.text

    a, b = EvalRun.objects.order_by("id")
    compared = client.get(f"/console/evaluations/compare/?a={a.pk}&b={b.pk}")
    assert compared.status_code == 200
    assert "Too few cases to tell these apart: 1 in the smaller evaluation, fewer than 30." in compared.text
    assert 'class="chart chart-grouped"' in compared.text and 'data-metric="task_success"' in compared.text


def test_bad_input_is_refused_and_changes_nothing(support_agent, dataset, starter, rung):
    client = client_for(starter)
    assert client.post("/console/evaluations/start/", {"dataset": "x"}).status_code == 400
    response = client.post("/console/evaluations/start/", {"dataset": dataset.pk, "version": "99"})
    assert response.status_code == 400 and "has no version 99" in response.text
    assert not EvalRun.objects.exists() and rung == []
    assert client.get("/console/evaluations/compare/?a=x").status_code == 400
    assert client.get("/console/evaluations/compare/?a=1000&b=1001").status_code == 404
    assert client.get("/console/evaluations/999/").status_code == 404
    assert client.get("/console/agents/support/whatif/?level=9").status_code == 400
    assert client.get("/console/agents/support/whatif/?level=3&tool=nope").status_code == 400
    assert client.get("/console/agents/nope/whatif/?level=3").status_code == 404
    assert client.post("/console/rules/whatif/", {"remove": "abc"}).status_code == 404
    bad_rule = client.post("/console/rules/whatif/", {"tool": "issue_refund", "field": "amount", "operator": ">"})
    assert bad_rule.status_code == 400


def test_pick_runs_as_cases(support_agent, starter, assigned_reviewer):
    run = run_finished(support_agent, starter, assigned_reviewer)
    client = client_for(starter)
    page = client.get("/console/agents/support/dataset-from-runs/")
    assert f'value="{run.pk}"' in page.text
    assert client.post("/console/agents/support/dataset-from-runs/", {"name": "picked"}).status_code == 400
    unknown = client.post("/console/agents/support/dataset-from-runs/", {"name": "picked", "runs": [run.pk + 99]})
    assert unknown.status_code == 400 and not Dataset.objects.exists()
    response = client.post("/console/agents/support/dataset-from-runs/", {"name": "picked", "runs": [run.pk]})
    assert response.status_code == 302
    assert DatasetCase.objects.get().source_run_id == run.pk


def test_whatif_preview_from_the_level_form_then_apply(support_agent, starter, assigned_reviewer):
    scenario = scenario_make(support_agent, starter, assigned_reviewer)
    client = client_for(starter)
    preview = client.post(
        "/console/agents/support/whatif/", {"level": "4", "tool": "issue_refund", "reason": "fewer waits"}
    )
    assert preview.status_code == 200
    text = preview.text
    assert "14 stored proposals" in text
    assert f'data-tool-call="{scenario.rejected.pk}"' in text and f'data-tool-call="{scenario.edited.pk}"' in text
    assert f'data-tool-call="{scenario.held.pk}"' not in text
    assert 'action="/console/agents/support/level/"' in text and 'value="fewer waits"' in text
    assert Agent.objects.get(pk=support_agent.pk).tool_levels == {}  # a preview writes nothing

    # Level 5 is refused for a tool that is not low-risk: shown, and no apply button.
    refused = client.get("/console/agents/support/whatif/?level=5&tool=issue_refund")
    assert "Level 5 is allowed only for low-risk reversible tools" in refused.text
    assert 'action="/console/agents/support/level/"' not in refused.text

    rule = BusinessRule.objects.get(tool="issue_refund", value=500)
    removed = client.post("/console/rules/whatif/", {"remove": str(rule.pk)})
    assert removed.status_code == 200 and f"remove rule #{rule.pk}" in removed.text
    assert BusinessRule.objects.filter(pk=rule.pk).exists()
    added = client.post(
        "/console/rules/whatif/",
        {
            "tool": "issue_refund",
            "field": "amount",
            "operator": ">",
            "value": "150",
            "effect": "block",
            "enabled": "on",
        },
    )
    assert added.status_code == 200 and 'action="/console/rules/new/"' in added.text
    assert BusinessRule.objects.count() == 3


def test_console_links_to_the_previews(support_agent, operator):
    page = client_for(operator).get("/console/")
    assert 'formaction="/console/agents/support/whatif/"' in page.text
    assert 'formaction="/console/rules/whatif/"' in page.text and "/console/evaluations/" in page.text
