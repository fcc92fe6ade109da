"""Evaluation mode: the support playbook on a dataset with a known answer, and no side effect ever."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from agents.eval_models import Dataset, EvalRun, EvalStatus
from agents.evaluation.datasets import cases_from_yaml, dataset_import
from agents.evaluation.metrics import compared
from agents.evaluation.runs import eval_run_create, eval_run_execute
from agents.models import LedgerEntry, OutboxEmail, Run, Ticket, TicketChange, ToolCall
from agents.versions import version_create
from approvals.models import ApprovalRequest
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

CASES = """
cases:
  - name: small refund
    input: {ticket_id: TICKET, customer_email: jane@example.com, amount: 120, currency: USD, reason: broken kettle}
    expected_calls:
      - tool: kb_search
      - tool: issue_refund
        arguments: {amount: {range: [0, 500]}, currency: USD}
        verdict: require_approval
      - tool: update_ticket
        arguments: {status: solved, note: {regex: "not_executed"}}
    expected_outcome:
      status: succeeded
      answer: {refund: not_executed, email: null}
  - name: medium refund
    input: {ticket_id: TICKET, customer_email: jane@example.com, amount: 300, currency: USD, reason: late}
    expected_calls:
      - tool: issue_refund
        arguments: {amount: 300}
      - tool: update_ticket
    expected_outcome: succeeded
  - name: refund over the block limit
    input: {ticket_id: TICKET, customer_email: jane@example.com, amount: 6000, currency: USD, reason: fraud}
    expected_calls:
      - tool: issue_refund
        verdict: block
      - tool: update_ticket
    expected_outcome: succeeded
  - name: refund over the policy
    input: {ticket_id: TICKET, customer_email: jane@example.com, amount: 800, currency: USD, reason: gift}
    expected_calls:
      - tool: issue_refund
        arguments: {amount: {range: [0, 500]}}
      - tool: update_ticket
    expected_outcome: succeeded
"""


def side_effects() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (LedgerEntry, OutboxEmail, TicketChange, ToolCall, Run, ApprovalRequest)
    }


@pytest.fixture
def dataset(support_agent, starter) -> Dataset:
    ticket = Ticket.objects.get()
    cases = cases_from_yaml(CASES.replace("TICKET", str(ticket.pk)))
    return dataset_import(agent=support_agent, name="refunds", cases=cases, user=starter)


def evaluated(agent, dataset, starter, **kwargs) -> EvalRun:
    eval_run = eval_run_create(agent=agent, dataset=dataset, user=starter, enqueue=False, **kwargs)
    finished = eval_run_execute(eval_run_id=eval_run.pk)
    assert finished is not None
    return finished


def test_scores_a_dataset_with_a_known_answer_and_executes_nothing(support_agent, dataset, starter):
    before = side_effects()
    eval_run = evaluated(support_agent, dataset, starter)
    assert side_effects() == before  # no ledger row, no email, no ticket change, no run, no approval

    assert eval_run.status == EvalStatus.SUCCEEDED and eval_run.cases_done == eval_run.cases_total == 4
    results = {result.case.name: result for result in eval_run.results.select_related("case")}
    assert [name for name, result in results.items() if not result.passed] == ["refund over the policy"]
    assert results["refund over the policy"].reason == (
        "expected issue_refund: amount 800.0 is not in [0, 500]; unexpected issue_refund (require_approval)"
    )
    small = results["small refund"]
    assert [(p["tool"], p["verdict"], p["executed"]) for p in small.proposals] == [
        ("kb_search", "execute", True),
        ("issue_refund", "require_approval", False),
        ("update_ticket", "require_approval", False),
    ]
    assert small.answer["refund"] == "not_executed" and small.steps == 4
    assert [p["verdict"] for p in results["refund over the block limit"].proposals][1] == "block"

    summary = eval_run.aggregates
    assert summary["cases"] == 4 and summary["passed"] == 3 and summary["task_success"] == 0.75
    # 12 judged proposals (3 a case): 7 sent to a person, 1 blocked.
    assert summary["proposals"] == 12
    assert summary["escalation_rate"] == round(7 / 12, 4) and summary["block_rate"] == round(1 / 12, 4)
    # Matched: 3 + 2 + 2 + 1 expected calls; over 9 expected plus 1 unexpected.
    assert summary["proposal_accuracy"] == 0.8
    assert summary["mean_steps"] == 4 and Decimal(summary["total_cost"]) == 0
    assert AuditEvent.objects.filter(action="agents.eval.finished", target_id=str(eval_run.pk)).exists()


def test_a_version_is_evaluated_with_its_own_behaviour(support_agent, dataset, starter):
    behaviour = {"tool_levels": {"issue_refund": 3, "update_ticket": 3}}
    version = version_create(
        agent=support_agent, author=starter, reason="try review-after", behaviour=behaviour, candidate=True
    )
    before = side_effects()
    eval_run = evaluated(support_agent, dataset, starter, version_number=version.number)
    assert side_effects() == before
    assert eval_run.version_id == version.pk
    small = eval_run.results.get(case__name="small refund")
    assert [p["verdict"] for p in small.proposals] == ["execute", "execute_and_review", "execute_and_review"]
    # The expected verdict was require_approval: this version fails the small refund.
    assert "verdict execute_and_review is not require_approval" in small.reason
    support_agent.refresh_from_db()
    assert support_agent.tool_levels == {}  # the live agent is untouched


def test_an_unknown_version_or_another_agents_dataset_is_refused(support_agent, dataset, starter):
    with pytest.raises(Exception, match="has no version 99"):
        eval_run_create(agent=support_agent, dataset=dataset, user=starter, version_number=99, enqueue=False)
    assert not EvalRun.objects.exists()


def test_running_twice_evaluates_once(support_agent, dataset, starter):
    eval_run = eval_run_create(agent=support_agent, dataset=dataset, user=starter, enqueue=False)
    assert eval_run_execute(eval_run_id=eval_run.pk) is not None
    assert eval_run_execute(eval_run_id=eval_run.pk) is None
    assert eval_run.results.count() == 4


def test_too_few_cases_to_tell_apart(support_agent, dataset, starter):
    a = evaluated(support_agent, dataset, starter)
    b = evaluated(support_agent, dataset, starter)
    verdict = compared(a.aggregates, b.aggregates)
    assert not verdict.distinguishable
    assert verdict.note == "Too few cases to tell these apart: 4 in the smaller evaluation, fewer than 30."
    many = {"cases": 40, "task_success_interval": [0.1, 0.3]}
    assert compared(many, {"cases": 40, "task_success_interval": [0.25, 0.5]}).note.startswith(
        "Too few cases to tell these apart: the 95 % intervals of task success overlap"
    )
    assert compared(many, {"cases": 40, "task_success_interval": [0.6, 0.9]}).distinguishable


def test_the_eval_command_prints_failures_and_metrics(support_agent, dataset, starter):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err = io.StringIO(), Terminal()
    call_command("eval", "--agent", "support", "--dataset", "refunds", "--as", starter.username, stdout=out, stderr=err)
    text = out.getvalue()
    eval_run = EvalRun.objects.get()
    failing = eval_run.results.get(passed=False)
    assert f"FAIL case {failing.case_id} refund over the policy: expected issue_refund: amount 800.0" in text
    assert f"evaluation {eval_run.pk}: 3 of 4 cases passed" in text
    assert "  task success: 75.0 %" in text and "  escalation rate: 58.3 %" in text
    assert "4/4" in err.getvalue()  # the progress bar, on a terminal

    version = version_create(
        agent=support_agent, author=starter, reason="review after", behaviour={"autonomy_level": 3}, candidate=True
    )
    out = io.StringIO()
    call_command(
        "eval",
        "--agent",
        "support",
        "--dataset",
        "refunds",
        "--version",
        str(version.number),
        "--as",
        "operator",
        stdout=out,
    )
    assert EvalRun.objects.latest("id").version_number == version.number
    assert "  escalation rate: 8.3 %" in out.getvalue()  # only the 800 refund waits (rule >500)
    with pytest.raises(CommandError, match="has no version 99"):
        call_command("eval", "--agent", "support", "--dataset", "refunds", "--version", "99", "--as", "operator")

    with pytest.raises(CommandError, match="has no dataset 'nope'"):
        call_command("eval", "--agent", "support", "--dataset", "nope", "--as", starter.username)
    with pytest.raises(CommandError, match="no owner"):
        call_command("eval", "--agent", "support", "--dataset", "refunds")
    assert Decimal(eval_run.aggregates["total_cost"]) == 0
