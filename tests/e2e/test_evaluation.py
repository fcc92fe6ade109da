"""Evaluations and the policy what-if in headless Chromium, against the real ASGI server (and
the real Celery worker for the evaluation task). Screenshots land in tests/e2e/artifacts/."""

from __future__ import annotations

import pytest

from agents.eval_models import EvalRun, EvalStatus
from agents.evaluation.datasets import cases_from_yaml, dataset_import
from agents.models import Agent, LedgerEntry, OutboxEmail, Ticket, TicketChange
from agents.versions import version_create
from tests.approvals.whatif_scenario import scenario_make
from tests.conftest import make_user
from tests.e2e import test_inbox as inbox_tests
from tests.e2e.test_inbox import shot
from tests.live import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

pages = inbox_tests.pages
server = inbox_tests.server
team = inbox_tests.team

CASE = """
- name: refund {amount}
  input: {{ticket_id: {ticket}, customer_email: jane@example.com, amount: {amount}, currency: USD}}
  expected_calls:
    - {{tool: issue_refund, arguments: {{amount: {{range: [0, 500]}}}}, verdict: require_approval}}
    - {{tool: update_ticket, arguments: {{status: solved}}}}
  expected_outcome: succeeded
"""


def evaluate_in_the_browser(page, dataset, version: int | None) -> EvalRun:
    from playwright.sync_api import expect

    page.goto(page.url.split("/console/")[0] + "/console/evaluations/")
    page.locator(".eval-start select[name=dataset]").select_option(str(dataset.pk))
    page.locator(".eval-start input[name=version]").fill("" if version is None else str(version))
    page.get_by_role("button", name="Evaluate").click()
    eval_run = EvalRun.objects.latest("id")
    # The task runs it on the worker; the page reloads itself until it is done.
    wait_until(
        lambda: EvalRun.objects.get(pk=eval_run.pk).status == EvalStatus.SUCCEEDED, timeout=30, what="the evaluation"
    )
    expect(page.locator("[data-field=eval-status]")).to_have_text("succeeded", timeout=10_000)
    return EvalRun.objects.get(pk=eval_run.pk)


def test_two_versions_evaluated_and_compared(pages, team, celery_worker):
    from playwright.sync_api import expect

    ticket = Ticket.objects.get().pk
    text = "".join(CASE.format(amount=amount, ticket=ticket) for amount in (120, 300, 450, 800))
    dataset = dataset_import(agent=team.agent, name="refunds", cases=cases_from_yaml(text), user=team.starter)
    candidate = version_create(
        agent=team.agent,
        author=team.starter,
        reason="refunds and tickets reviewed afterwards",
        behaviour={"tool_levels": {"issue_refund": 3, "update_ticket": 3}},
        candidate=True,
    )
    effects = [model.objects.count() for model in (LedgerEntry, OutboxEmail, TicketChange)]

    page = pages.open(team.starter, "/console/evaluations/")
    current = evaluate_in_the_browser(page, dataset, None)
    expect(page.locator("tr.fail")).to_have_count(1)
    expect(page.locator("tr.fail [data-field=reason]")).to_contain_text("amount 800.0 is not in [0, 500]")
    shot(page, "evaluation-detail")
    assert current.aggregates["passed"] == 3

    trial = evaluate_in_the_browser(page, dataset, candidate.number)
    assert trial.aggregates["passed"] == 0  # the candidate runs what the dataset expects to wait
    assert [model.objects.count() for model in (LedgerEntry, OutboxEmail, TicketChange)] == effects

    page.goto(page.url.split("/console/")[0] + "/console/evaluations/")
    page.get_by_label(f"Compare {current.label} as A").check()
    page.get_by_label(f"Compare {trial.label} as B").check()
    page.get_by_role("button", name="Compare A and B").click()
    table = page.locator(".eval-compare-table")
    expect(table.locator("[data-metric=task_success] td")).to_have_text(["75.0 %", "0.0 %"])
    # The lookups run (a third of the proposals); only the 800 refund waits under the candidate (rule >500).
    expect(table.locator("[data-metric=escalation_rate] td")).to_have_text(["66.7 %", "8.3 %"])
    expect(page.locator("[data-field=note]")).to_contain_text("Too few cases to tell these apart: 4")
    expect(page.locator("svg.chart-grouped rect[data-value]")).to_have_count(8)  # four shares of each
    shot(page, "evaluation-compare")


def test_whatif_before_a_level_change(pages, team, doorbells):
    from playwright.sync_api import expect

    reviewer = make_user("rita", "reviewers")
    from guardian.shortcuts import assign_perm

    assign_perm("review_agent", reviewer, team.agent)
    scenario = scenario_make(team.agent, team.starter, reviewer)

    console = pages.open(team.starter, "/console/")
    row = console.locator(f"#agent-{team.agent.slug}")
    row.locator(".level-form select[name=level]").select_option("4")
    row.locator(".level-form select[name=tool]").select_option("issue_refund")
    row.locator(".level-form input[name=reason]").fill("refunds have been right")
    row.get_by_role("button", name="Preview: what if").click()

    section = console.locator(f"section.whatif[data-agent={team.agent.slug}]")
    expect(section).to_contain_text("14 stored proposals")
    expect(section.locator("tr[data-verdict=execute] [data-field=after]")).to_have_text("6")
    expect(section.locator("tr[data-verdict=require_approval] [data-field=before]")).to_have_text("9")
    expect(section.locator("tr[data-verdict=require_approval] [data-field=after]")).to_have_text("7")
    turned_down = section.locator("table.turned-down tbody tr[data-tool-call]")
    expect(turned_down).to_have_count(2)
    expect(section.locator(f"tr[data-tool-call='{scenario.rejected.pk}'] [data-field=decision]")).to_contain_text(
        "rejected by rita"
    )
    expect(section.locator(f"tr[data-tool-call='{scenario.edited.pk}'] [data-field=decision]")).to_contain_text(
        "edited by rita"
    )
    shot(console, "whatif-level-change")
    assert Agent.objects.get(pk=team.agent.pk).tool_levels == {}

    console.get_by_role("button", name="Apply: issue_refund at level 4").click()
    expect(console.locator(".messages")).to_contain_text("Autonomy level of issue_refund of Support agent set to 4.")
    assert Agent.objects.get(pk=team.agent.pk).tool_levels == {"issue_refund": 4}
