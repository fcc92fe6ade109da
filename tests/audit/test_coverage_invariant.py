"""Every state change leaves exactly one audit event of its kind.

A scripted scenario (approvals, an edit, a rejection, an expiry, bulk decisions, a kill
switch, a level change, a cancel) runs through the services; then the number of events of
each action is compared with what the domain tables say happened.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents import operations, runtime
from agents.models import Run, RunStatus, Step, Ticket, ToolCall, ToolCallStatus
from approvals.decisions import approval_request_decide, approvals_sweep
from approvals.models import ApprovalRequest, ApprovalStatus, Decision
from audit.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def start(agent, user, amount):
    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=agent,
        user=user,
        payload={"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": amount, "currency": "USD"},
    )
    runtime.run_advance(run_id=run.pk)
    return run


def pending(run, tool="issue_refund"):
    return ApprovalRequest.objects.get(run=run, tool=tool, status=ApprovalStatus.PENDING)


def test_audit_events_match_state_changes(
    support_agent, starter, assigned_reviewer, operator, other_reviewer, client, settings
):
    from django.contrib.auth.models import Group

    from approvals.models import BusinessRule
    from approvals.operations import business_rule_save, reviewer_assignment_set

    level_changes = kill_switches = cancels = rule_changes = 0
    assert reviewer_assignment_set(agent=support_agent, reviewer=other_reviewer, granted=True, by=operator)
    assert not reviewer_assignment_set(agent=support_agent, reviewer=other_reviewer, granted=True, by=operator)
    rule = BusinessRule.objects.get(tool="issue_refund", operator=">", value=500)
    rule.note = "Refunds over $500 need a person (checked monthly)."
    business_rule_save(rule=rule, by=operator, reason="wording")
    rule_changes += 1

    # Sign-ins: one good, one bad (the page, as a person would).
    assert client.post("/accounts/login/", {"username": "reviewer", "password": "wrong"}).status_code == 200
    assert client.post("/accounts/login/", {"username": "reviewer", "password": PASSWORD}).status_code == 302
    client.post("/accounts/logout/")

    approved = start(support_agent, starter, 100)
    approval_request_decide(approval=pending(approved), reviewer=assigned_reviewer, verdict="approve")
    runtime.run_advance(run_id=approved.pk)

    edited = start(support_agent, starter, 300)
    approval = pending(edited)
    approval_request_decide(
        approval=approval, reviewer=assigned_reviewer, verdict="edit", arguments={**approval.arguments, "amount": 250}
    )
    runtime.run_advance(run_id=edited.pk)

    rejected = start(support_agent, starter, 50)
    approval_request_decide(
        approval=pending(rejected), reviewer=other_reviewer, verdict="reject", comment="duplicate request"
    )
    runtime.run_advance(run_id=rejected.pk)

    leads = Group.objects.create(name="support-leads")
    support_agent.escalation_group = leads
    support_agent.save()
    expiring = start(support_agent, starter, 75)
    approvals_sweep(now=timezone.now() + timedelta(seconds=support_agent.approval_sla_seconds + 5))
    approvals_sweep(now=timezone.now() + timedelta(seconds=support_agent.approval_deadline_seconds + 5))
    # Every request still pending expired; their runs' workers apply the expiries.
    for run in (approved, edited, rejected, expiring):
        runtime.run_advance(run_id=run.pk)

    bulk = [start(support_agent, starter, amount) for amount in (10, 20, 30)]
    response = APIClient()
    response.force_authenticate(assigned_reviewer)
    results = response.post(
        "/api/v1/approvals/decisions/", {"ids": [pending(run).pk for run in bulk], "verdict": "approve"}, format="json"
    ).json()["results"]
    assert [item["status"] for item in results] == [200, 200, 200]

    # The inbox page's bulk form, as a reviewer in the browser would.
    page_bulk = [start(support_agent, starter, amount) for amount in (40, 41)]
    client.force_login(other_reviewer)
    response = client.post(
        "/inbox/bulk/", {"ids": [pending(run).pk for run in page_bulk], "verdict": "reject", "comment": "dup"}
    )
    assert response.status_code == 302
    # The workers the resumes were rung for apply those decisions.
    for run in bulk[1:] + page_bulk:
        runtime.run_advance(run_id=run.pk)

    operations.agent_set_level(agent=support_agent, level=3, user=operator, reason="trusted")
    level_changes += 1
    runtime.run_advance(run_id=bulk[0].pk)  # continues at level 3: executes and queues reviews

    cancelled = runtime.run_create(
        agent=support_agent,
        user=starter,
        payload={"ticket_id": Ticket.objects.first().pk, "customer_email": "jane@example.com", "amount": 60},
    )
    runtime.run_cancel(run=cancelled, user=operator, reason="wrong customer")
    cancels += 1
    # A running run is asked to stop, and stops at its next step boundary.
    running = runtime.run_create(
        agent=support_agent,
        user=starter,
        payload={"ticket_id": Ticket.objects.first().pk, "customer_email": "jane@example.com", "amount": 61},
    )
    Run.objects.filter(pk=running.pk).update(status=RunStatus.RUNNING)
    runtime.run_cancel(run=running, user=operator, reason="customer called")
    runtime.run_advance(run_id=running.pk)
    cancels += 1

    operations.agent_set_enabled(agent=support_agent, enabled=False, user=operator, reason="incident")
    kill_switches += 1

    counts = Counter(AuditEvent.objects.values_list("action", flat=True))

    assert counts["agents.run.created"] == Run.objects.count()
    assert (
        counts["agents.run.finished"]
        == Run.objects.filter(status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED]).count()
    )
    assert counts["agents.run.cancelled"] == Run.objects.filter(status=RunStatus.CANCELLED).count()
    assert counts["agents.run.paused"] == ApprovalRequest.objects.exclude(kind="review").count()
    assert counts["agents.tool_call.proposed"] == ToolCall.objects.count()
    assert counts["approvals.policy.verdict"] == ToolCall.objects.count()
    assert (
        counts["agents.tool_call.executed"]
        == ToolCall.objects.filter(status__in=[ToolCallStatus.SUCCEEDED, ToolCallStatus.FAILED])
        .exclude(tool="ask_human")
        .count()
    )
    assert counts["approvals.request.created"] == ApprovalRequest.objects.count()
    assert counts["approvals.request.decided"] == Decision.objects.count() == 8
    assert (
        counts["approvals.request.expired"]
        == ApprovalRequest.objects.filter(status=ApprovalStatus.EXPIRED).count()
        >= 1
    )
    assert (
        counts["approvals.request.cancelled"] == ApprovalRequest.objects.filter(status=ApprovalStatus.CANCELLED).count()
    )
    assert counts["agents.agent.level_changed"] == level_changes
    assert counts["agents.agent.kill_switch"] == kill_switches
    assert counts["agents.run.cancel_requested"] == Run.objects.filter(cancel_requested=True).count() == 1
    assert (
        Run.objects.filter(status=RunStatus.CANCELLED, agent=support_agent)
        .exclude(error__contains="kill switch")
        .count()
        == cancels
    )
    assert counts["approvals.request.escalated"] == ApprovalRequest.objects.exclude(escalated_at=None).count() >= 1
    assert counts["approvals.rule.changed"] == rule_changes
    assert counts["approvals.rule.created"] == BusinessRule.objects.count()
    assert counts["approvals.reviewer.assigned"] == 1
    assert counts["auth.login_failed"] == 1
    assert counts["auth.login"] == 2  # the password sign-in and the inbox reviewer's session
    assert counts["auth.logout"] == 1
    assert counts["agents.step.reasoning"] == Step.objects.filter(kind=Step.Kind.REASONING).count()
    assert counts["agents.run.started"] == Run.objects.exclude(started_at=None).count()
    decisions_in_steps = Step.objects.filter(kind=Step.Kind.DECISION).count()
    # every decision or expiry that reached a run left a decision step
    assert decisions_in_steps == counts["approvals.request.decided"] + counts["approvals.request.expired"]

    from django.core.management import call_command

    call_command("audit_verify")
