"""``manage.py dataset_import``: YAML and export_feedback's JSONL; a bad file adds nothing."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from agents.eval_models import Dataset, DatasetCase
from agents.evaluation.datasets import cases_from_runs, dataset_import
from agents.evaluation.runs import eval_run_create, eval_run_execute
from agents.models import Ticket
from tests.agents.feedback_runs import run_finished

pytestmark = pytest.mark.django_db


def imported(path, *args: str) -> str:
    out = io.StringIO()
    call_command("dataset_import", str(path), "--agent", "support", *args, stdout=out)
    return out.getvalue()


def test_yaml_cases_with_bare_values_as_equal(support_agent, tmp_path):
    path = tmp_path / "refunds.yaml"
    path.write_text(
        "- name: one\n"
        "  input: {ticket_id: 1, amount: 10}\n"
        "  expected_calls:\n"
        "    - {tool: issue_refund, arguments: {amount: 10, currency: {regex: '^US'}}}\n"
        "  expected_outcome: succeeded\n"
        "- input: {ticket_id: 1, amount: 20}\n"
    )
    assert imported(path, "--name", "refunds") == "added 2 cases to dataset 'refunds' of support (2 in all)\n"
    first, second = DatasetCase.objects.order_by("id")
    assert first.source == "yaml" and first.name == "one"
    assert first.expected_calls == [
        {"tool": "issue_refund", "arguments": {"amount": {"equal": 10}, "currency": {"regex": "^US"}}}
    ]
    assert first.expected_outcome == "succeeded"
    assert second.expected_calls == [] and second.expected_outcome is None
    # Again: the cases are added to the same dataset.
    assert imported(path, "--name", "refunds").endswith("(4 in all)\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- input: {a: 1}\n  expected_calls: [{tool: x, arguments: {a: {range: [3, 1]}}}]\n", "range [3, 1] is empty"),
        ("- input: [1]\n", "the input is a mapping"),
        ("- {input: {}, expected: 1}\n", "unknown keys expected"),
        ("cases: {a: 1}\n", "a list of cases"),
        ("- input: {a: [\n", "The YAML is not valid"),
        ("- input: {}\n  expected_outcome: won\n", "the outcome is one of"),
    ],
)
def test_a_bad_yaml_file_adds_nothing(support_agent, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CommandError, match=re.escape(message)):
        imported(path, "--name", "bad")
    assert not Dataset.objects.exists() and not DatasetCase.objects.exists()


def test_export_feedback_jsonl_becomes_cases_with_equal_matchers(support_agent, starter, assigned_reviewer, tmp_path):
    run_finished(support_agent, starter, assigned_reviewer, edits={"issue_refund": {"amount": 33}})
    path = tmp_path / "feedback.jsonl"
    with open(path, "w") as out:
        call_command("export_feedback", "--agent", "support", stdout=out)
    assert imported(path, "--name", "corrected").startswith("added 1 cases")
    case = DatasetCase.objects.get()
    assert case.source == "feedback" and case.expected_outcome == "succeeded"
    refund = next(call for call in case.expected_calls if call["tool"] == "issue_refund")
    assert refund["arguments"]["amount"] == {"equal": 33}
    assert [call["tool"] for call in case.expected_calls] == [
        "kb_search",
        "issue_refund",
        "send_email",
        "update_ticket",
    ]

    (tmp_path / "bad.jsonl").write_text('{"run": 1}\n')
    with pytest.raises(CommandError, match="line 1: not an export_feedback case"):
        imported(tmp_path / "bad.jsonl", "--name", "corrected")
    assert DatasetCase.objects.count() == 1


def test_cases_picked_from_runs_expect_what_was_approved(support_agent, starter, assigned_reviewer):
    run = run_finished(support_agent, starter, assigned_reviewer, edits={"issue_refund": {"amount": 33}})
    cases = cases_from_runs(agent=support_agent, run_ids=[run.pk])
    dataset = dataset_import(agent=support_agent, name="picked", cases=cases, user=starter)
    case = dataset.cases.get()
    assert case.source == "run" and case.source_run_id == run.pk and case.input == run.input
    refund = next(call for call in case.expected_calls if call["tool"] == "issue_refund")
    assert refund["arguments"]["amount"] == {"equal": 33}

    # Evaluated, the playbook proposes the 120 asked for, not the 33 approved; and without an
    # executed refund it sends no email.
    eval_run = eval_run_create(agent=support_agent, dataset=dataset, user=starter, enqueue=False)
    result = eval_run_execute(eval_run_id=eval_run.pk).results.get()
    assert not result.passed
    assert "expected issue_refund: amount 120.0 is not 33" in result.reason
    assert "expected send_email: not proposed" in result.reason

    with pytest.raises(Exception, match="Not finished runs of support"):
        cases_from_runs(agent=support_agent, run_ids=[run.pk + 1000])
    assert Ticket.objects.count() == 1
