"""``manage.py export_feedback``: corrected runs as evaluation cases, streamed."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import runtime
from agents.definitions import agent_upsert
from agents.demo.data import RESEARCH_AGENT
from agents.feedback import run_feedback_give
from agents.models import Run, RunFeedback, RunStatus, Step, ToolCall, ToolCallStatus
from agents.tools import arguments_hash
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus, Decision
from tests.agents.feedback_runs import CUSTOMER_EMAIL, run_finished, run_started
from tests.conftest import grant_tools

pytestmark = pytest.mark.django_db


class Terminal(io.StringIO):
    """Standard error as a terminal would be."""

    def isatty(self) -> bool:
        return True


def export(*args: str, stderr: io.StringIO | None = None) -> tuple[list[dict], str, str]:
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    call_command("export_feedback", *args, stdout=out, stderr=err)
    text = out.getvalue()
    return [json.loads(line) for line in text.splitlines()], text, err.getvalue()


@pytest.fixture
def scenario(support_agent, starter, assigned_reviewer):
    """A run with a reviewer's edit, a run with a thumbs down and a correction, and runs that are
    not cases: one without feedback, one still waiting after an edit, one of another agent."""
    edited = run_finished(support_agent, starter, assigned_reviewer, edits={"issue_refund": {"amount": 33}})
    down = run_finished(support_agent, starter, assigned_reviewer)
    run_feedback_give(run=down, user=starter, rating="down", correction=f"Email {CUSTOMER_EMAIL} before refunding.")
    run_feedback_give(run=down, user=assigned_reviewer, rating="up")
    plain = run_finished(support_agent, starter, assigned_reviewer)
    waiting = run_started(support_agent, starter)
    refund = ApprovalRequest.objects.get(run=waiting, tool="issue_refund")
    approval_request_decide(
        approval=refund, reviewer=assigned_reviewer, verdict="edit", arguments={**refund.arguments, "amount": 10}
    )
    runtime.run_advance(run_id=waiting.pk)
    research, _ = agent_upsert(RESEARCH_AGENT)
    grant_tools(starter, research.tools)
    other = runtime.run_create(agent=research, user=starter, payload={"question": "refund policy"})
    runtime.run_advance(run_id=other.pk)
    other.refresh_from_db()
    run_feedback_give(run=other, user=starter, rating="up")
    return {"edited": edited, "down": down, "plain": plain, "waiting": waiting, "other": other}


def test_exports_the_corrected_runs_as_cases(scenario):
    cases, text, err = export("--agent", "support", "--format", "jsonl")
    edited, down = scenario["edited"], scenario["down"]
    assert Run.objects.get(pk=scenario["waiting"].pk).status == RunStatus.WAITING
    assert [case["run"] for case in cases] == [edited.pk, down.pk]
    assert err == ""

    first = cases[0]
    assert first["agent"] == "support" and first["feedback"] == []
    [proposed] = [call for call in first["proposed"] if call["tool"] == "issue_refund"]
    assert proposed["arguments"]["amount"] == 120
    [decided] = [call for call in first["approved"] if call["tool"] == "issue_refund"]
    assert decided["decision"] == "edited" and decided["by"] == "reviewer"
    assert decided["arguments"]["amount"] == 33
    expected = first["expected"]
    assert [call["tool"] for call in expected["tool_calls"]] == [
        "kb_search",
        "issue_refund",
        "send_email",
        "update_ticket",
    ]
    assert expected["tool_calls"][1]["arguments"]["amount"] == 33
    assert expected["outcome"] == "succeeded" and expected["corrections"] == []
    kinds = {step["kind"] for step in first["steps"]}
    assert kinds == {"reasoning", "tool_call", "observation", "decision"}
    assert [step["index"] for step in first["steps"]] == sorted(step["index"] for step in first["steps"])

    second = cases[1]
    assert second["feedback"] == [
        {"rating": "down", "correction": "Email <EMAIL_1> before refunding.", "by": "starter"},
        {"rating": "up", "correction": "", "by": "reviewer"},
    ]
    assert second["expected"]["corrections"] == ["Email <EMAIL_1> before refunding."]
    assert {call["decision"] for call in second["approved"] if call["tool"] != "kb_search"} == {"approved"}
    assert second["expected"]["tool_calls"][1]["arguments"]["amount"] == 120


def test_the_cases_hold_placeholders_never_the_real_values(scenario):
    cases, text, _ = export("--agent", "support")
    assert CUSTOMER_EMAIL not in text and "jane.doe" not in text
    for case in cases:
        assert case["input"]["customer_email"] == "<EMAIL_1>"
        [email] = [call for call in case["expected"]["tool_calls"] if call["tool"] == "send_email"]
        assert email["arguments"]["to"] == "<EMAIL_1>"
    # The database still holds the real values the tools were given.
    assert Run.objects.get(pk=cases[0]["run"]).input["customer_email"] == CUSTOMER_EMAIL


def test_output_file_and_since(scenario, tmp_path):
    target = tmp_path / "cases.jsonl"
    _, text, _ = export("--agent", "support", "--output", str(target))
    assert text == ""
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["run"] for line in lines] == [scenario["edited"].pk, scenario["down"].pk]
    later, _, _ = export("--agent", "support", "--since", "2999-01-01")
    assert later == []
    with pytest.raises(CommandError, match="--since"):
        export("--agent", "support", "--since", "yesterday")


def test_an_unknown_agent_or_format_fails_clearly(support_agent):
    with pytest.raises(CommandError, match=r"Unknown agent 'nope'\. Agents: support\."):
        export("--agent", "nope")
    with pytest.raises(CommandError, match="invalid choice: 'csv'"):
        export("--agent", "support", "--format", "csv")
    with pytest.raises(CommandError, match="--agent"):
        call_command("export_feedback", stdout=io.StringIO(), stderr=io.StringIO())


def test_a_progress_bar_only_on_a_terminal(scenario):
    _, text, err = export("--agent", "support", stderr=io.StringIO())
    assert err == "" and len(text.splitlines()) == 2
    _, tty_text, tty_err = export("--agent", "support", stderr=Terminal())
    assert tty_text == text
    assert "export_feedback" in tty_err and "2/2" in tty_err and "exported 2 cases of support" in tty_err


# --- Streaming: the queries grow with the chunks, not the runs ---------------------------------------


def corrected_runs(agent, starter, reviewer, count: int) -> None:
    """Finished runs as the runtime leaves them (a search by the policy, a refund a reviewer
    edited, feedback): rows written directly, since this test is about the reads."""
    for number in range(count):
        run = Run.objects.create(
            agent=agent,
            started_by=starter,
            status=RunStatus.SUCCEEDED,
            input={"customer_email": CUSTOMER_EMAIL, "amount": 120},
            redactions={"<EMAIL_1>": CUSTOMER_EMAIL},
            step_count=4,
        )
        Step.objects.bulk_create(
            [
                Step(
                    run=run, index=1, kind=Step.Kind.TOOL_CALL, input={"tool": "kb_search", "arguments": {"query": "x"}}
                ),
                Step(run=run, index=2, kind=Step.Kind.OBSERVATION, input={"tool": "kb_search"}, output={"results": []}),
                Step(
                    run=run,
                    index=3,
                    kind=Step.Kind.TOOL_CALL,
                    input={"tool": "issue_refund", "arguments": {"amount": 120}},
                ),
                Step(
                    run=run,
                    index=4,
                    kind=Step.Kind.DECISION,
                    input={"tool": "issue_refund", "arguments": {"amount": 30}},
                ),
            ]
        )
        ToolCall.objects.create(
            run=run,
            step=1,
            tool="kb_search",
            arguments={"query": "x"},
            arguments_hash="h",
            status=ToolCallStatus.SUCCEEDED,
        )
        refund = ToolCall.objects.create(
            run=run,
            step=3,
            tool="issue_refund",
            arguments={"amount": 30},
            arguments_hash="h",
            status=ToolCallStatus.SUCCEEDED,
        )
        approval = ApprovalRequest.objects.create(
            run=run,
            agent=agent,
            tool_call=refund,
            kind=ApprovalKind.APPROVAL,
            tool="issue_refund",
            arguments={"amount": 120},
            arguments_hash=arguments_hash({"amount": 120}),
            risk_class="financial",
            policy_reason="level 2",
            status=ApprovalStatus.APPROVED,
            decided_arguments={"amount": 30},
            decided_by=reviewer,
        )
        Decision.objects.create(request=approval, reviewer=reviewer, verdict="edit", arguments={"amount": 30})
        RunFeedback.objects.create(run=run, user=starter, rating="down", correction=f"run {number}")


def export_queries() -> tuple[int, list[dict]]:
    with CaptureQueriesContext(connection) as queries:
        cases, _, _ = export("--agent", "support", "--chunk-size", "100")
    return len(queries), cases


def test_the_queries_do_not_grow_with_the_runs(support_agent, starter, assigned_reviewer):
    corrected_runs(support_agent, starter, assigned_reviewer, 5)
    few, cases = export_queries()
    assert len(cases) == 5
    corrected_runs(support_agent, starter, assigned_reviewer, 45)
    many, cases = export_queries()
    assert len(cases) == 50
    assert many == few <= 8
    assert all(case["approved"][1]["decision"] == "edited" for case in cases)
    assert all(case["expected"]["tool_calls"][1]["arguments"] == {"amount": 30} for case in cases)
