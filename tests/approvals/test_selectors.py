from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from agents.models import Agent, Run, ToolCall
from agents.tools import arguments_hash
from approvals import api
from approvals.events import approval_payload
from approvals.models import ApprovalRequest
from approvals.selectors import approval_list_for_reviewer, user_may_review
from tests.conftest import make_user
from tests.pages import client_for

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


def test_inbox_for_50_pending_approvals_is_two_queries(support_agent, starter, assigned_reviewer):
    pending_approvals(support_agent, starter, 50)
    list(approval_list_for_reviewer(user=assigned_reviewer))  # content types are cached per process
    with CaptureQueriesContext(connection) as queries:
        items = [approval_payload(a) for a in approval_list_for_reviewer(user=assigned_reviewer, status="pending")]
    assert len(items) == 50
    # The approvals, then their agents once (not joined to each row: an agent's JSON columns
    # would be read as many times as it has approvals).
    assert len(queries) == 2, [q["sql"] for q in queries]


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


def second_agent_reviewed_by(reviewer) -> Agent:
    agent = Agent.objects.create(slug="research", name="Research", objective="x", scope="x")
    assign_perm("review_agent", reviewer, agent)
    return agent


def test_api_count_stops_at_the_cap_and_pages_go_on(monkeypatch, support_agent, starter, assigned_reviewer):
    monkeypatch.setattr(api, "COUNT_CAP", 10)
    client = APIClient()
    client.force_authenticate(assigned_reviewer)
    research = second_agent_reviewed_by(assigned_reviewer)
    pending_approvals(support_agent, starter, 3)
    pending_approvals(research, starter, 2)
    client.get("/api/v1/approvals/")
    with CaptureQueriesContext(connection) as few:
        first = client.get("/api/v1/approvals/").json()
    assert (first["count"], first["count_exact"], first["next"], len(first["results"])) == (5, True, None, 5)
    assert client.get("/api/v1/approvals/?page=2").status_code == 404
    pending_approvals(support_agent, starter, 40)
    pending_approvals(research, starter, 20)
    with CaptureQueriesContext(connection) as many:
        first = client.get("/api/v1/approvals/").json()
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    # 65 approvals: counted up to the cap only, and said so; the next link is read from the rows.
    assert (first["count"], first["count_exact"], len(first["results"])) == (10, False, 50)
    assert first["next"].endswith("/api/v1/approvals/?page=2") and first["previous"] is None
    second = client.get(first["next"]).json()
    assert (second["count"], second["count_exact"], second["next"], len(second["results"])) == (10, False, None, 15)
    assert second["previous"] is not None
    ids = [item["id"] for item in first["results"] + second["results"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 65
    assert {item["agent"]["slug"] for item in first["results"] + second["results"]} == {"support", "research"}
    assert client.get("/api/v1/approvals/?page=3").status_code == 404


def test_inbox_page_query_count_is_the_same_for_5_and_300_approvals(
    monkeypatch, support_agent, starter, assigned_reviewer
):
    from approvals import views

    monkeypatch.setattr(views, "INBOX_LIMIT", 20)
    research = second_agent_reviewed_by(assigned_reviewer)
    client = client_for(assigned_reviewer)
    pending_approvals(support_agent, starter, 3)
    pending_approvals(research, starter, 2)
    client.get("/inbox/")
    with CaptureQueriesContext(connection) as few:
        page = client.get("/inbox/?status=").text
    assert page.count('class="inbox-row') == 5 + 1  # the rows and the row template
    pending_approvals(support_agent, starter, 200)
    pending_approvals(research, starter, 95)
    decided = ApprovalRequest.objects.filter(agent=research).order_by("-pk")[:3]
    ApprovalRequest.objects.filter(pk__in=list(decided.values_list("pk", flat=True))).update(
        status="approved", decided_by=assigned_reviewer
    )
    with CaptureQueriesContext(connection) as many:
        page = client.get("/inbox/?status=").text
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    assert page.count('class="inbox-row') == 20 + 1
    assert f"by {assigned_reviewer.username}" in page and "Research" in page
    newest = ApprovalRequest.objects.order_by("-pk").first()
    assert f'href="/inbox/{newest.pk}/"' in page and f'href="/runs/{newest.run_id}/"' in page


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's plan of the first page")
@pytest.mark.parametrize("status", [None, "pending"])
def test_sqlite_reads_the_first_page_in_index_order(support_agent, assigned_reviewer, status):
    # Without this the plan is "agent index, then sort every approval of those agents".
    queryset = approval_list_for_reviewer(user=assigned_reviewer, status=status)[:50]
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = " / ".join(str(row[-1]) for row in cursor.fetchall())
    assert "approval_status_newest_idx" in plan if status else "approval_newest_idx" in plan, plan
    assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
