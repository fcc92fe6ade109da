from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from agents.models import Run, ToolCall
from agents.tools import arguments_hash
from approvals.events import approval_payload
from approvals.models import ApprovalRequest
from approvals.selectors import approval_list_for_reviewer, user_may_review
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def pending_approvals(agent, starter, count):
    run = Run.objects.create(agent=agent, started_by=starter, status="waiting")
    for step in range(count):
        arguments = {"amount": step + 1, "currency": "USD"}
        call = ToolCall.objects.create(
            run=run,
            step=step + 1,
            tool="issue_refund",
            arguments=arguments,
            arguments_hash=arguments_hash(arguments),
            status="awaiting",
        )
        ApprovalRequest.objects.create(
            run=run,
            agent=agent,
            tool_call=call,
            tool="issue_refund",
            arguments=arguments,
            arguments_hash=call.arguments_hash,
            risk_class="financial",
            policy_reason="level 2",
        )


def test_inbox_for_50_pending_approvals_is_one_query(support_agent, starter, assigned_reviewer):
    pending_approvals(support_agent, starter, 50)
    list(approval_list_for_reviewer(user=assigned_reviewer))  # content types are cached per process
    with CaptureQueriesContext(connection) as queries:
        items = [approval_payload(a) for a in approval_list_for_reviewer(user=assigned_reviewer, status="pending")]
    assert len(items) == 50
    assert len(queries) == 1, [q["sql"] for q in queries]


def test_api_list_query_count_does_not_grow_with_items(support_agent, starter, assigned_reviewer):
    client = APIClient()
    client.force_authenticate(assigned_reviewer)
    pending_approvals(support_agent, starter, 5)
    with CaptureQueriesContext(connection) as few:
        assert client.get("/api/v1/approvals/?status=pending").json()["count"] == 5
    pending_approvals(support_agent, starter, 45)
    with CaptureQueriesContext(connection) as many:
        assert client.get("/api/v1/approvals/?status=pending").json()["count"] == 50
    assert len(many) == len(few)


def test_group_grant_and_contract_permission_name(support_agent, starter):
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="refund-team")
    member = make_user("member", "reviewers")
    member.groups.add(team)
    assert not user_may_review(user=member, agent=support_agent)
    # the contract's name for the permission works with guardian's shortcuts
    assign_perm("approvals.review_agent", team, support_agent)
    member = type(member).objects.get(pk=member.pk)
    assert user_may_review(user=member, agent=support_agent)
    pending_approvals(support_agent, starter, 2)
    assert approval_list_for_reviewer(user=member).count() == 2


def test_the_reviewer_right_answers_to_its_contract_name(support_agent, reviewer, other_reviewer):
    from guardian.shortcuts import assign_perm

    from approvals.selectors import user_may_review

    assign_perm("approvals.review_agent", reviewer, support_agent)
    assert reviewer.has_perm("approvals.review_agent", support_agent)
    assert reviewer.has_perm("agents.review_agent", support_agent)
    assert user_may_review(user=reviewer, agent=support_agent)
    assert not other_reviewer.has_perm("approvals.review_agent", support_agent)
