from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents import operations, runtime
from agents.models import LedgerEntry, OutboxEmail, Run, RunStatus, Step, Ticket, ToolCall, ToolCallStatus
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus

pytestmark = pytest.mark.django_db


def refund_input(amount=120, **extra):
    ticket = Ticket.objects.first()
    return {
        "ticket_id": ticket.pk,
        "customer_email": "jane@example.com",
        "amount": amount,
        "currency": "USD",
        "reason": "kettle arrived broken",
        **extra,
    }


def advance(run: Run) -> Run:
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_support_run_waits_at_refund_then_finishes_after_approval(support_agent, starter, assigned_reviewer):
    run = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    assert run.status == RunStatus.QUEUED

    run = advance(run)
    assert run.status == RunStatus.WAITING
    approval = ApprovalRequest.objects.get(run=run)
    assert approval.tool == "issue_refund" and approval.status == ApprovalStatus.PENDING
    assert "level 2" in approval.policy_reason
    assert LedgerEntry.objects.count() == 0

    approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    run.refresh_from_db()
    # The decision is in the database; the run's worker applies it under its lease.
    assert run.status == RunStatus.WAITING
    assert ToolCall.objects.get(run=run, tool="issue_refund").status == ToolCallStatus.AWAITING
    run = advance(run)
    # send_email waits for approval too at level 2
    assert run.status == RunStatus.WAITING
    assert LedgerEntry.objects.get().amount == Decimal("120.00")
    email_approval = ApprovalRequest.objects.get(run=run, tool="send_email")
    approval_request_decide(approval=email_approval, reviewer=assigned_reviewer, verdict="approve")
    run = advance(run)
    ticket_approval = ApprovalRequest.objects.get(run=run, tool="update_ticket")
    approval_request_decide(approval=ticket_approval, reviewer=assigned_reviewer, verdict="approve")
    run = advance(run)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result["refund"] == "succeeded"
    assert OutboxEmail.objects.get().to == "jane@example.com"
    assert Ticket.objects.get().status == "solved"
    kinds = list(run.steps.values_list("kind", flat=True))
    assert kinds.count("decision") == 3
    assert kinds[-1] == Step.Kind.REASONING
    assert set(ToolCall.objects.filter(run=run).values_list("status", flat=True)) == {ToolCallStatus.SUCCEEDED}


def test_edited_amount_is_what_executes(support_agent, starter, assigned_reviewer):
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input(300)))
    approval = ApprovalRequest.objects.get(run=run)
    approval_request_decide(
        approval=approval, reviewer=assigned_reviewer, verdict="edit", arguments={**approval.arguments, "amount": 250}
    )
    advance(run)
    assert LedgerEntry.objects.get().amount == Decimal("250.00")


def test_rejection_replans_and_skips_the_refund(support_agent, starter, assigned_reviewer):
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    approval = ApprovalRequest.objects.get(run=run)
    approval_request_decide(
        approval=approval, reviewer=assigned_reviewer, verdict="reject", comment="Not within 30 days"
    )
    run = advance(run)
    # the email step depends on a successful refund: it is skipped; the ticket update waits
    assert not ApprovalRequest.objects.filter(run=run, tool="send_email").exists()
    assert ApprovalRequest.objects.filter(run=run, tool="update_ticket").exists()
    assert LedgerEntry.objects.count() == 0
    decision = run.steps.get(kind="decision")
    assert "Not within 30 days" in decision.error


def test_rejection_stops_the_run_when_the_agent_says_so(support_agent, starter, assigned_reviewer):
    support_agent.on_reject = "stop"
    support_agent.save()
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    approval_request_decide(
        approval=ApprovalRequest.objects.get(run=run), reviewer=assigned_reviewer, verdict="reject", comment="no"
    )
    run = advance(run)
    assert run.status == RunStatus.REJECTED


def test_kill_switch_cancels_waiting_runs_and_refuses_new_ones(support_agent, starter, operator):
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    operations.agent_set_enabled(agent=support_agent, enabled=False, user=operator, reason="incident")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert ApprovalRequest.objects.get(run=run).status == ApprovalStatus.CANCELLED
    with pytest.raises(runtime.AgentDisabled):
        runtime.run_create(agent=support_agent, user=starter, payload=refund_input())


def test_running_run_stops_at_next_boundary_when_cancel_requested(support_agent, starter, operator):
    run = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    runtime.run_cancel(run=run, user=operator)
    run.refresh_from_db()
    assert run.cancel_requested and run.status == RunStatus.RUNNING
    run = advance(run)
    assert run.status == RunStatus.CANCELLED
    assert not ToolCall.objects.filter(run=run).exists()


def test_level_3_executes_and_queues_a_review(support_agent, starter, assigned_reviewer):
    support_agent.autonomy_level = 3
    support_agent.save()
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert LedgerEntry.objects.count() == 1
    reviews = ApprovalRequest.objects.filter(run=run, kind="review")
    assert set(reviews.values_list("tool", flat=True)) == {"issue_refund", "send_email", "update_ticket"}
    approval_request_decide(
        approval=reviews.get(tool="issue_refund"),
        reviewer=assigned_reviewer,
        verdict="flag",
        comment="amount looks high",
    )
    assert reviews.get(tool="issue_refund").status == ApprovalStatus.FLAGGED


def test_level_1_suggestions_are_never_executed(support_agent, starter, assigned_reviewer):
    support_agent.autonomy_level = 1
    support_agent.save()
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    suggestion = ApprovalRequest.objects.get(run=run)
    assert suggestion.kind == "suggestion"
    approval_request_decide(approval=suggestion, reviewer=assigned_reviewer, verdict="done", comment="refunded")
    run = advance(run)
    assert LedgerEntry.objects.count() == 0
    assert ToolCall.objects.get(run=run, tool="issue_refund").status == ToolCallStatus.SUGGESTED


def test_budget_stops_the_run_with_a_reason(support_agent, starter):
    support_agent.max_steps = 1
    support_agent.save()
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    assert run.status == RunStatus.FAILED
    assert "Step budget exhausted" in run.error


def test_wall_time_counts_running_not_waiting(support_agent, starter, assigned_reviewer):
    support_agent.max_wall_seconds = 60
    support_agent.save()
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    assert run.status == RunStatus.WAITING and 0 < run.active_ms < 60_000
    # a long wait for a person does not count ...
    Run.objects.filter(pk=run.pk).update(started_at=run.started_at - timedelta(hours=5))
    approval_request_decide(
        approval=ApprovalRequest.objects.get(run=run), reviewer=assigned_reviewer, verdict="approve"
    )
    run = advance(run)
    assert run.status == RunStatus.WAITING
    # ... running time does
    Run.objects.filter(pk=run.pk).update(active_ms=61_000)
    approval_request_decide(
        approval=ApprovalRequest.objects.get(run=run, tool="send_email"), reviewer=assigned_reviewer, verdict="approve"
    )
    run = advance(run)
    assert run.status == RunStatus.FAILED and "Wall-time budget" in run.error


def test_bad_input_creates_nothing(support_agent, starter):
    with pytest.raises(runtime.RunInputInvalid) as exc:
        runtime.run_create(agent=support_agent, user=starter, payload={"ticket_id": "x"})
    errors = exc.value.details["errors"]
    assert "input.ticket_id" in errors
    assert any("'amount' is a required property" in message for message in errors["input"])
    assert Run.objects.count() == 0


def test_ask_human_waits_for_an_answer(starter, assigned_reviewer, support_agent):
    from tests.conftest import grant_tools

    support_agent.tools = [*support_agent.tools, "ask_human"]
    support_agent.playbook = {
        "steps": [
            {"id": "ask", "tool": "ask_human", "arguments": {"question": "Refund {{input.amount}}?"}},
            {"final": {"answer": "{{steps.ask.output.answer}}"}},
        ]
    }
    support_agent.save()
    grant_tools(starter, ["ask_human"])
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    question = ApprovalRequest.objects.get(run=run)
    assert question.kind == "question" and run.status == RunStatus.WAITING
    approval_request_decide(
        approval=question, reviewer=assigned_reviewer, verdict="respond", comment="Yes, the order qualifies"
    )
    run = advance(run)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"answer": "Yes, the order qualifies"}


def test_kill_switch_stops_a_running_run_at_the_next_step_boundary(support_agent, starter, operator, monkeypatch):
    from agents import tools
    from agents.models import Agent

    support_agent.autonomy_level = 4
    support_agent.save()
    original = tools.registry["kb_search"]

    def search_then_switch_off(args, context):
        # The operator pulls the kill switch while this step runs.
        operations.agent_set_enabled(
            agent=Agent.objects.get(pk=support_agent.pk), enabled=False, user=operator, reason="x"
        )
        return original.func(args, context)

    monkeypatch.setitem(
        tools.registry, "kb_search", original.__class__(**{**original.__dict__, "func": search_then_switch_off})
    )
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input(amount=20)))
    assert run.status == RunStatus.CANCELLED and "kill switch" in run.error
    assert list(ToolCall.objects.filter(run=run).values_list("tool", flat=True)) == ["kb_search"]
    assert LedgerEntry.objects.count() == 0 and OutboxEmail.objects.count() == 0


def test_cost_budget_stops_the_run_with_a_reason(support_agent, starter):
    support_agent.max_cost = Decimal("0.50")
    support_agent.save()
    run = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    Run.objects.filter(pk=run.pk).update(cost=Decimal("0.75"))
    run = advance(run)
    assert run.status == RunStatus.FAILED and "Cost budget exhausted" in run.error
    assert not ToolCall.objects.filter(run=run).exists()


def test_the_sweeper_rings_again_for_a_lost_enqueue_and_an_expired_lease(
    support_agent, starter, settings, django_capture_on_commit_callbacks, doorbells
):
    lost = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    crashed = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    fresh = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    long_ago = timezone.now() - timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS + 5)
    Run.objects.filter(pk=lost.pk).update(enqueued_at=long_ago)
    Run.objects.filter(pk=crashed.pk).update(
        status=RunStatus.RUNNING, lease_owner="dead-worker", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        counts = runtime.runs_recover()
    assert counts == {"requeued": 1, "lease_expired": 1, "resumes_rung": 0}
    rung = [run_id for task, run_id in doorbells if task == "advance"]
    assert sorted(rung) == sorted([lost.pk, crashed.pk]) and fresh.pk not in rung
    # the worker that picks the crashed run up takes it over and finishes the work
    run = advance(Run.objects.get(pk=crashed.pk))
    assert run.status == RunStatus.WAITING and run.lease_owner == ""


def test_a_decided_approval_whose_resume_was_lost_is_rung_again(
    support_agent, starter, assigned_reviewer, settings, django_capture_on_commit_callbacks, doorbells
):
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
    approval = ApprovalRequest.objects.get(run=run)
    with django_capture_on_commit_callbacks(execute=True):
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    assert doorbells == [("resume", run.pk)]
    # The resume is lost (the broker was down): the run still waits with a decided approval.
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING
    with django_capture_on_commit_callbacks(execute=True):
        assert runtime.runs_recover()["resumes_rung"] == 0  # too soon: a worker may be on it
    later = timezone.now() + timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert runtime.runs_recover(now=later)["resumes_rung"] == 1
    assert doorbells == [("resume", run.pk), ("resume", run.pk)]
    run = advance(run)
    assert LedgerEntry.objects.get().amount == Decimal("120.00")
    assert runtime.runs_recover(now=later)["resumes_rung"] == 0
