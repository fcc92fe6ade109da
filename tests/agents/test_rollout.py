"""Staged rollout: a canary started, promoted and rolled back by hand (audited), the live rates per
version, and the guard that rolls a bad candidate back once and says so by the signed webhook."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from agents import runtime
from agents.models import Agent, AgentVersion, Run, Ticket
from agents.rollout import canary_compare, canary_guards_evaluate, canary_promote, canary_rollback, canary_start
from agents.tasks import sweep
from agents.versions import VersionConflict, VersionInvalid, version_create
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus, WebhookDelivery
from approvals.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from audit.models import AuditEvent
from tests.approvals.test_webhooks import Receiver
from tests.live import wait_until

SECRET = "whsec-canary-5678"


def refund_input() -> dict:
    return {"ticket_id": Ticket.objects.first().pk, "customer_email": "jane@example.com", "amount": 120}


def candidate_of(agent: Agent, user) -> AgentVersion:
    """The candidate refunds the flat order total, whatever the customer asked: reviewers reject it."""
    playbook = json.loads(json.dumps(agent.playbook))
    playbook["steps"][1]["arguments"]["amount"] = 999
    return version_create(
        agent=agent, author=user, reason="refund the order total", behaviour={"playbook": playbook}, candidate=True
    )


def rollbacks_sent(receiver: Receiver) -> list[tuple[dict, bytes]]:
    # The agent's webhook also carries its approvals' events.
    return [(h, body) for h, body in receiver.received if json.loads(body)["event"] == "version.rolled_back"]


@pytest.mark.django_db
def test_start_promote_and_roll_back_by_hand_are_audited(support_agent, operator):
    candidate = candidate_of(support_agent, operator)
    current = AgentVersion.objects.get(agent=support_agent, number=1)
    with pytest.raises(VersionConflict):
        canary_start(agent=support_agent, version=current, share=10, user=operator, reason="x")
    with pytest.raises(VersionInvalid):
        canary_start(agent=support_agent, version=candidate, share=101, user=operator, reason="x")
    agent = canary_start(agent=support_agent, version=candidate, share=10, user=operator, reason="try on 10 %")
    assert (agent.candidate_version_id, agent.canary_share) == (candidate.pk, 10)
    started = AuditEvent.objects.get(action="agents.version.canary_started")
    assert started.data == {"version": 2, "replaces": None, "share": 10, "current": 1, "reason": "try on 10 %"}

    assert canary_rollback(agent=agent, user=operator, reason="not yet") is True
    agent.refresh_from_db()
    assert agent.candidate_version_id is None and agent.canary_share == 0 and agent.current_version_id == current.pk
    rolled = AuditEvent.objects.get(action="agents.version.canary_rolled_back")
    assert rolled.actor_repr == "operator" and rolled.data["automatic"] is False and rolled.data["version"] == 2
    assert rolled.data["evidence"]["candidate"]["runs"] == 0
    with pytest.raises(VersionConflict):
        canary_rollback(agent=agent, user=operator, reason="again")

    canary_start(agent=agent, version=candidate, share=50, user=operator, reason="again, wider")
    agent = canary_promote(agent=agent, user=operator, reason="looks good")
    assert agent.current_version_id == candidate.pk and agent.candidate_version_id is None
    assert agent.playbook["steps"][1]["arguments"]["amount"] == 999  # the row carries the current behaviour
    promoted = AuditEvent.objects.get(action="agents.version.promoted")
    assert promoted.data["from"] == 1 and promoted.data["to"] == 2 and set(promoted.data["diff"]) == {"playbook"}
    with pytest.raises(VersionConflict):
        canary_promote(agent=agent, user=operator, reason="again")
    assert not WebhookDelivery.objects.exists()  # by hand: the audit log, no webhook


@pytest.mark.django_db
def test_the_comparison_counts_each_versions_runs_and_decisions(support_agent, starter, assigned_reviewer):
    candidate = candidate_of(support_agent, starter)
    canary_start(agent=support_agent, version=candidate, share=50, user=starter, reason="half")
    runs = [runtime.run_create(agent=support_agent, user=starter, payload=refund_input()) for _ in range(12)]
    for run in runs:
        runtime.run_advance(run_id=run.pk)
    for approval in ApprovalRequest.objects.filter(tool="issue_refund").select_related("run"):
        verdict = "reject" if approval.run.version_id == candidate.pk else "approve"
        approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict=verdict, comment="no")
    on_candidate = sum(1 for run in runs if Run.objects.get(pk=run.pk).version_id == candidate.pk)
    assert 0 < on_candidate < 12
    comparison = canary_compare(agent=Agent.objects.get(pk=support_agent.pk))
    assert comparison.candidate.runs == on_candidate and comparison.current.runs == 12 - on_candidate
    assert comparison.candidate.decisions == comparison.candidate.rejections == on_candidate
    assert comparison.current.rejections == 0 and comparison.current.decisions == 12 - on_candidate
    assert comparison.breach == ""  # fewer than 20 of the candidate's decisions: too few to judge


@pytest.mark.django_db(transaction=True)
@override_settings(CANARY_GUARD_MIN_DECISIONS=20, CANARY_GUARD_REJECTION_FACTOR=2)
def test_the_guard_rolls_a_bad_candidate_back_once_and_sends_the_signed_webhook(
    support_agent, starter, assigned_reviewer, celery_worker
):
    receiver = Receiver()
    Agent.objects.filter(pk=support_agent.pk).update(webhook_url=receiver.url, webhook_secret=SECRET)
    candidate = candidate_of(support_agent, starter)
    canary_start(agent=support_agent, version=candidate, share=50, user=starter, reason="half of new runs")
    try:
        runs: list[Run] = []
        # New runs until the candidate has 20 (the worker advances each to its refund, which waits).
        while sum(1 for run in runs if run.version_id == candidate.pk) < 20:
            runs.append(runtime.run_create(agent=support_agent, user=starter, payload=refund_input()))
        waiting = lambda: ApprovalRequest.objects.filter(tool="issue_refund").count() == len(runs)  # noqa: E731
        wait_until(waiting, timeout=120, what="every run's refund to wait for a reviewer")
        current_runs = [run for run in runs if run.version_id != candidate.pk]
        # The current version: one rejection in ten or so; the candidate: every one rejected.
        decided = 0
        for approval in ApprovalRequest.objects.filter(tool="issue_refund").select_related("run").order_by("pk"):
            bad = approval.run.version_id == candidate.pk
            verdict = "reject" if bad or approval.run_id == current_runs[0].pk else "approve"
            approval_request_decide(
                approval=approval, reviewer=assigned_reviewer, verdict=verdict, comment="wrong amount"
            )
            decided += bad
            if bad and decided == 19:
                assert canary_guards_evaluate() == {"canary_rollbacks": 0}  # 19 decisions: not yet
        sweep.delay()  # the guard runs in the worker's sweep
        rolled_back = lambda: Agent.objects.filter(pk=support_agent.pk, candidate_version__isnull=True).exists()  # noqa: E731
        wait_until(rolled_back, timeout=60, what="the sweep's guard to roll the candidate back")
        assert canary_guards_evaluate() == {"canary_rollbacks": 0}  # once: nothing left to roll back
        sweep.delay()
        wait_until(lambda: rollbacks_sent(receiver), timeout=60, what="the version.rolled_back webhook")
        celery_worker.wait_idle()
    finally:
        receiver.close()

    [event] = AuditEvent.objects.filter(action="agents.version.canary_rolled_back")
    assert event.actor_repr == "canary guard" and event.data["automatic"] is True and event.data["version"] == 2
    evidence = event.data["evidence"]
    assert evidence["candidate"]["decisions"] == 20 and evidence["candidate"]["rejections"] == 20
    assert evidence["current"]["rejections"] == 1 and evidence["current"]["decisions"] == len(current_runs)
    assert "above 2 x the current version's" in event.data["reason"]
    [(headers, body)] = rollbacks_sent(receiver)
    assert verify(secret=SECRET, timestamp=headers[TIMESTAMP_HEADER], body=body, signature=headers[SIGNATURE_HEADER])
    assert not verify(
        secret="wrong", timestamp=headers[TIMESTAMP_HEADER], body=body, signature=headers[SIGNATURE_HEADER]
    )
    payload = json.loads(body)
    assert payload["event"] == "version.rolled_back" and payload["agent"] == "support" and payload["version"] == 2
    assert payload["evidence"]["candidate"]["rejection_rate"] == 1.0
    assert payload["text"].startswith("[support] candidate version 2 was rolled back automatically")
    # New runs take the current version only.
    agent = Agent.objects.get(pk=support_agent.pk)
    assert agent.canary_share == 0 and agent.current_version.number == 1
    assert all(
        runtime.run_create(agent=agent, user=starter, payload=refund_input()).version.number == 1 for _ in range(5)
    )
    assert ApprovalRequest.objects.filter(status=ApprovalStatus.REJECTED).count() == 21
