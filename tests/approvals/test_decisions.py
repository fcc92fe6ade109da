from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from agents import runtime
from agents.models import LedgerEntry, Run, RunStatus, Step, Ticket, ToolCall, ToolCallStatus
from approvals.decisions import AlreadyDecided, approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus, BusinessRule, Decision
from audit.models import AuditEvent
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def waiting_refund(agent, starter, amount=120) -> ApprovalRequest:
    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=agent,
        user=starter,
        payload={"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": amount, "currency": "USD"},
    )
    runtime.run_advance(run_id=run.pk)
    return ApprovalRequest.objects.get(run=run, tool="issue_refund")


def test_list_detail_and_decide_through_the_api(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer)
    listed = client.get("/api/v1/approvals/?status=pending").json()
    assert [item["id"] for item in listed["results"]] == [approval.pk]
    assert listed["results"][0]["risk_class"] == "financial"
    detail = client.get(f"/api/v1/approvals/{approval.pk}/").json()
    assert detail["tool"] == "issue_refund" and detail["arguments"]["amount"] == 120
    assert detail["policy_reason"] and detail["scope"] and detail["history"]
    assert detail["arguments_schema"]["properties"]["amount"]
    decided = client.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json")
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    again = client.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_decided"
    # One decision, audited once, by the reviewer: the second call changed nothing.
    assert Decision.objects.filter(request=approval).count() == 1
    [event] = AuditEvent.objects.filter(action="approvals.request.decided", target_id=str(approval.pk))
    assert event.actor_id == str(assigned_reviewer.pk) and event.data["verdict"] == "approve"
    assert event.data["status"] == ApprovalStatus.APPROVED


def test_filters_and_bad_filter(support_agent, starter, assigned_reviewer):
    waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer)
    assert client.get("/api/v1/approvals/?risk=financial&agent=support").json()["count"] == 1
    assert client.get("/api/v1/approvals/?risk=read").json()["count"] == 0
    bogus = client.get("/api/v1/approvals/?status=bogus")
    assert bogus.status_code == 400 and "status" in bogus.json()["errors"]


def test_reviewer_without_permission_sees_nothing(support_agent, starter, assigned_reviewer, other_reviewer):
    approval = waiting_refund(support_agent, starter)
    client = client_for(other_reviewer)
    assert client.get("/api/v1/approvals/").json()["count"] == 0
    assert client.get(f"/api/v1/approvals/{approval.pk}/").status_code == 404
    response = client.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json")
    assert response.status_code == 404
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_starter_cannot_approve_own_run(support_agent, starter):
    assign_perm("review_agent", starter, support_agent)
    approval = waiting_refund(support_agent, starter)
    response = client_for(starter).post(
        f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json"
    )
    assert response.status_code == 403
    assert "four-eyes" in response.json()["detail"]
    assert not Decision.objects.exists()


def test_two_approval_rule_needs_two_people(support_agent, starter, assigned_reviewer, other_reviewer):
    BusinessRule.objects.create(
        tool="issue_refund", field="amount", operator=">=", value=1000, effect="require_two_approvals"
    )
    assign_perm("review_agent", other_reviewer, support_agent)
    approval = waiting_refund(support_agent, starter, amount=1500)
    assert approval.required_approvals == 2
    first = approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    assert first.status == ApprovalStatus.PENDING and first.approvals_count == 1
    with pytest.raises(AlreadyDecided):
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    second = approval_request_decide(approval=approval, reviewer=other_reviewer, verdict="approve")
    assert second.status == ApprovalStatus.APPROVED
    runtime.run_advance(run_id=approval.run_id)
    assert ToolCall.objects.get(pk=approval.tool_call_id).status == ToolCallStatus.SUCCEEDED


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"amount": "lots", "currency": "USD"}, "amount"),
        ({"amount": 50, "currency": "XYZ"}, "currency"),
        ({"amount": 50, "currency": "USD", "extra": 1}, "extra"),
        ({"amount": 6000, "currency": "USD"}, "rule #"),
    ],
)
def test_bad_edits_are_400_and_change_nothing(support_agent, starter, assigned_reviewer, arguments, message):
    approval = waiting_refund(support_agent, starter)
    response = client_for(assigned_reviewer).post(
        f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "edit", "arguments": arguments}, format="json"
    )
    assert response.status_code == 400, response.content
    assert message in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING and approval.decided_arguments is None
    assert not Decision.objects.exists()


@pytest.mark.parametrize("body", [{"verdict": "maybe"}, {"verdict": "reject"}, {"verdict": "edit"}, {}, [1]])
def test_malformed_decisions_are_400(support_agent, starter, assigned_reviewer, body):
    approval = waiting_refund(support_agent, starter)
    response = client_for(assigned_reviewer).post(f"/api/v1/approvals/{approval.pk}/decision/", body, format="json")
    assert response.status_code == 400
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    assert not Decision.objects.exists()


def test_bulk_decide_checks_each(support_agent, starter, assigned_reviewer):
    first = waiting_refund(support_agent, starter)
    second = waiting_refund(support_agent, starter)
    approval_request_decide(approval=second, reviewer=assigned_reviewer, verdict="reject", comment="dup")
    response = client_for(assigned_reviewer).post(
        "/api/v1/approvals/decisions/", {"ids": [first.pk, second.pk, 999999], "verdict": "approve"}, format="json"
    )
    assert response.status_code == 200
    statuses = {item["id"]: item["status"] for item in response.json()["results"]}
    assert statuses == {first.pk: 200, second.pk: 409, 999999: 404}
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.decided_by) == (ApprovalStatus.APPROVED, assigned_reviewer)
    assert second.status == ApprovalStatus.REJECTED and second.resolution_comment == "dup"  # left as it was


def test_expiry_applies_the_default_action_once(support_agent, starter, assigned_reviewer):
    from datetime import timedelta

    from django.utils import timezone

    from approvals.decisions import approvals_sweep

    approval = waiting_refund(support_agent, starter)
    later = timezone.now() + timedelta(seconds=support_agent.approval_deadline_seconds + 1)
    assert approvals_sweep(now=later) == {"expired": 1, "escalated": 0, "webhooks_rung": 0}
    assert approvals_sweep(now=later) == {"expired": 0, "escalated": 0, "webhooks_rung": 0}
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.EXPIRED
    assert AuditEvent.objects.filter(action="approvals.request.expired").count() == 1
    runtime.run_advance(run_id=approval.run_id)  # re-plans with "expired"
    assert ToolCall.objects.get(pk=approval.tool_call_id).status == ToolCallStatus.REJECTED
    assert "expired" in Step.objects.get(run_id=approval.run_id, kind=Step.Kind.DECISION).input["comment"]
    with pytest.raises(AlreadyDecided):
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")


def test_escalation_after_sla(
    support_agent, starter, assigned_reviewer, mailoutbox, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.contrib.auth.models import Group
    from django.utils import timezone

    from approvals.decisions import approvals_sweep
    from approvals.models import InboxEvent

    leads = Group.objects.create(name="support-leads")
    lead = make_user("lead")
    lead.groups.add(leads)
    support_agent.escalation_group = leads
    support_agent.save()
    approval = waiting_refund(support_agent, starter)
    later = timezone.now() + timedelta(seconds=support_agent.approval_sla_seconds + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert approvals_sweep(now=later)["escalated"] == 1
    assert approvals_sweep(now=later)["escalated"] == 0
    approval.refresh_from_db()
    assert approval.escalated_at is not None and approval.status == ApprovalStatus.PENDING
    assert [m.to for m in mailoutbox] == [["lead@example.com"]]
    assert "issue_refund" in mailoutbox[0].subject
    assert InboxEvent.objects.filter(approval=approval).values_list("type", flat=True).last() == "approval.updated"
    assert AuditEvent.objects.filter(action="approvals.request.escalated").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_decisions_one_wins(support_agent, starter, django_capture_on_commit_callbacks, doorbells):
    if connection.vendor != "postgresql":
        pytest.skip("row-lock races are a PostgreSQL property; run with DATABASE_URL=postgres://...")
    approval = waiting_refund(support_agent, starter)
    reviewers = [make_user(f"r{i}", "reviewers") for i in range(20)]
    for user in reviewers:
        assign_perm("review_agent", user, support_agent)
    barrier = threading.Barrier(20)
    codes: list[int] = []
    lock = threading.Lock()

    def decide(user):
        client = client_for(user)
        barrier.wait()
        try:
            response = client.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json")
            with lock:
                codes.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(user,)) for user in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] + [409] * 19
    assert Decision.objects.filter(request=approval).count() == 1
    assert AuditEvent.objects.filter(action="approvals.request.decided").count() == 1
    assert doorbells.count(("resume", approval.run_id)) == 1


def test_decision_resumes_and_refund_amount_is_exact(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter, amount=499.99)
    approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    runtime.run_advance(run_id=approval.run_id)
    assert LedgerEntry.objects.get().amount == Decimal("499.99")


def test_an_edit_that_meets_a_two_approval_rule_needs_two_people(
    support_agent, starter, assigned_reviewer, other_reviewer
):
    BusinessRule.objects.create(
        tool="issue_refund", field="amount", operator=">=", value=1000, effect="require_two_approvals"
    )
    assign_perm("review_agent", other_reviewer, support_agent)
    approval = waiting_refund(support_agent, starter, amount=120)
    assert approval.required_approvals == 1
    edited = approval_request_decide(
        approval=approval,
        reviewer=assigned_reviewer,
        verdict="edit",
        arguments={**approval.arguments, "amount": 1500},
    )
    assert edited.status == ApprovalStatus.PENDING
    assert edited.required_approvals == 2 and edited.approvals_count == 1
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.WAITING
    second = approval_request_decide(approval=approval, reviewer=other_reviewer, verdict="approve")
    assert second.status == ApprovalStatus.APPROVED and second.decided_arguments["amount"] == 1500


def test_an_approval_is_bound_to_the_arguments_the_reviewer_saw(
    support_agent, starter, assigned_reviewer, other_reviewer
):
    BusinessRule.objects.create(
        tool="issue_refund", field="amount", operator=">=", value=100, effect="require_two_approvals"
    )
    assign_perm("review_agent", other_reviewer, support_agent)
    approval = waiting_refund(support_agent, starter, amount=120)
    seen = client_for(other_reviewer).get(f"/api/v1/approvals/{approval.pk}/").json()
    assert seen["arguments_hash"] == approval.arguments_hash
    # Meanwhile the first reviewer lowers the amount.
    approval_request_decide(
        approval=approval, reviewer=assigned_reviewer, verdict="edit", arguments={**approval.arguments, "amount": 110}
    )
    url = f"/api/v1/approvals/{approval.pk}/decision/"
    stale = client_for(other_reviewer).post(
        url, {"verdict": "approve", "arguments_hash": seen["arguments_hash"]}, format="json"
    )
    assert stale.status_code == 409, stale.content
    assert stale.json()["code"] == "arguments_changed"
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING and approval.approvals_count == 1
    assert Decision.objects.filter(request=approval).count() == 1
    fresh = client_for(other_reviewer).get(f"/api/v1/approvals/{approval.pk}/").json()
    assert fresh["arguments_hash"] != seen["arguments_hash"]
    current = client_for(other_reviewer).post(
        url, {"verdict": "approve", "arguments_hash": fresh["arguments_hash"]}, format="json"
    )
    assert current.status_code == 200 and current.json()["status"] == ApprovalStatus.APPROVED
    bad = client_for(other_reviewer).post(url, {"verdict": "approve", "arguments_hash": "xyz"}, format="json")
    assert bad.status_code == 400


def test_the_starter_cannot_review_their_own_executed_action(support_agent, starter, assigned_reviewer):
    from approvals.decisions import NotAllowed

    support_agent.autonomy_level = 3
    support_agent.save()
    assign_perm("review_agent", starter, support_agent)
    approval = waiting_refund(support_agent, starter)
    assert approval.kind == "review"
    with pytest.raises(NotAllowed):
        approval_request_decide(approval=approval, reviewer=starter, verdict="ok")
    assert approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="ok").status == "reviewed_ok"


def test_expiry_with_the_cancel_action_cancels_the_run(support_agent, starter):
    from datetime import timedelta

    from django.utils import timezone

    from approvals.decisions import approvals_sweep

    support_agent.expiry_action = "cancel"
    support_agent.save()
    approval = waiting_refund(support_agent, starter)
    approvals_sweep(now=timezone.now() + timedelta(seconds=support_agent.approval_deadline_seconds + 1))
    runtime.run_advance(run_id=approval.run_id)
    run = Run.objects.get(pk=approval.run_id)
    assert run.status == RunStatus.CANCELLED and "expired" in run.error
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_decision_racing_the_expiry_sweeper_ends_in_one_state(support_agent, starter, assigned_reviewer, doorbells):
    from datetime import timedelta

    from django.utils import timezone

    from approvals.decisions import approval_request_expire

    for _ in range(5):
        approval = waiting_refund(support_agent, starter)
        later = timezone.now() + timedelta(seconds=support_agent.approval_deadline_seconds + 1)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def decide(approval=approval, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
                outcomes.append("approved")
            except AlreadyDecided:
                outcomes.append("too late")
            finally:
                connection.close()

        def expire(approval=approval, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                outcomes.append("expired" if approval_request_expire(approval_id=approval.pk, now=later) else "no-op")
            finally:
                connection.close()

        threads = [threading.Thread(target=decide), threading.Thread(target=expire)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        approval.refresh_from_db()
        assert sorted(outcomes) in (["approved", "no-op"], ["expired", "too late"]), outcomes
        assert approval.status == ("approved" if "approved" in outcomes else "expired")
        terminal = AuditEvent.objects.filter(
            target_id=str(approval.pk), action__in=["approvals.request.decided", "approvals.request.expired"]
        )
        assert terminal.count() == 1
