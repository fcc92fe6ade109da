"""The runs list page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm

from agents.models import Agent, Run, RunStatus
from agents.permissions import may_read_run
from tests.conftest import make_user
from tests.pages import SCRIPT, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_agent(db) -> Agent:
    return Agent.objects.create(slug="billing", name="Billing agent", objective="Bills.", scope="Bills only.")


def make_runs(agent, user, count, **fields) -> list[Run]:
    return Run.objects.bulk_create(Run(agent=agent, started_by=user, input={"n": i}, **fields) for i in range(count))


def listed(response) -> list[int]:
    return [row["run"].pk for row in response.context["rows"]]


def test_the_list_follows_may_read_run(
    support_agent, other_agent, operator, auditor, assigned_reviewer, other_reviewer, outsider
):
    make_runs(support_agent, operator, 2)
    make_runs(other_agent, operator, 2)
    (own,) = make_runs(other_agent, outsider, 1)
    make_runs(support_agent, None, 1)
    grouped = make_user("grouped")
    group = Group.objects.create(name="billing-starters")
    grouped.groups.add(group)
    assign_perm("start_run", group, other_agent)
    # A global permission opens no one else's trace (may_read_run asks about the agent), so no row.
    global_holder = make_user("global_holder")
    global_holder.user_permissions.add(Permission.objects.get(codename="start_run"))
    everyone = set(Run.objects.values_list("pk", flat=True))

    for user in (operator, auditor, assigned_reviewer, other_reviewer, outsider, grouped, global_holder):
        response = client_for(user).get("/runs/")
        assert response.status_code == 200
        expected = {run.pk for run in Run.objects.select_related("agent") if may_read_run(user=user, run=run)}
        assert set(listed(response)) == expected, user.username
    assert set(listed(client_for(operator).get("/runs/"))) == everyone
    assert set(listed(client_for(outsider).get("/runs/"))) == {own.pk}
    assert listed(client_for(other_reviewer).get("/runs/")) == []
    reviewer_rows = {row["run"].agent_id for row in client_for(assigned_reviewer).get("/runs/").context["rows"]}
    assert reviewer_rows == {support_agent.pk}


def test_rows_link_to_their_trace_newest_first(support_agent, operator):
    runs = make_runs(support_agent, operator, 3)
    response = client_for(operator).get("/runs/")
    assert listed(response) == sorted((run.pk for run in runs), reverse=True)
    for run in runs:
        assert f'href="/runs/{run.pk}/"' in response.text


def test_filters(support_agent, other_agent, operator, outsider):
    mine = make_runs(support_agent, operator, 2, status=RunStatus.SUCCEEDED)
    failed = make_runs(other_agent, operator, 1, status=RunStatus.FAILED)
    theirs = make_runs(other_agent, outsider, 1)
    old = make_runs(support_agent, outsider, 1)
    Run.objects.filter(pk=old[0].pk).update(created_at=timezone.now() - timedelta(days=10))
    client = client_for(operator)

    def ids(query: str) -> set[int]:
        response = client.get("/runs/?" + query)
        assert response.status_code == 200, response.context["errors"]
        return set(listed(response))

    assert ids("agent=billing") == {failed[0].pk, theirs[0].pk}
    assert ids("status=failed") == {failed[0].pk}
    assert ids("status=succeeded&agent=billing") == set()
    assert ids("starter=outsider") == {theirs[0].pk, old[0].pk}
    today = timezone.localdate()
    recent = {run.pk for run in mine + failed + theirs}
    assert ids(f"date_from={today.isoformat()}") == recent
    assert ids(f"date_to={(today - timedelta(days=1)).isoformat()}") == {old[0].pk}
    ten_days_ago = (today - timedelta(days=10)).isoformat()
    assert ids(f"date_from={ten_days_ago}&date_to={ten_days_ago}") == {old[0].pk}
    assert ids("agent=&status=&starter=&date_from=&date_to=") == recent | {old[0].pk}


def test_an_agent_filter_for_an_agent_one_may_not_see_shows_nothing(support_agent, other_agent, operator, outsider):
    make_runs(other_agent, operator, 2)
    make_runs(support_agent, outsider, 1)
    client = client_for(outsider)
    for slug in ("billing", "no-such-agent"):
        response = client.get(f"/runs/?agent={slug}")
        assert response.status_code == 400
        assert response.context["rows"] == [] and "#" not in response.text.split("</form>", 1)[1]
        assert "There is no agent by that name" in response.text
    assert "Billing agent" not in client.get("/runs/").text


def test_pagination(support_agent, operator):
    runs = make_runs(support_agent, operator, 60)
    newest_first = sorted((run.pk for run in runs), reverse=True)
    client = client_for(operator)
    first = client.get("/runs/?status=queued")
    assert listed(first) == newest_first[:50]
    assert 'href="?status=queued&amp;page=2"' in first.text and "Page 1 of 2" in first.text
    second = client.get("/runs/?status=queued&page=2")
    assert second.status_code == 200 and listed(second) == newest_first[50:]
    assert 'href="?status=queued&amp;page=1"' in second.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=3", "There is no page 3: pages go from 1 to 1."),
        ("page=0", "There is no page 0"),
        ("page=-1", "There is no page -1"),
        ("page=99999999999999999999999", "There is no page"),
        ("page=two", "The page number must be a whole number."),
        ("page=1.5", "The page number must be a whole number."),
        ("status=exploded", "Unknown status"),
        ("date_from=2026-13-45", "From: give a date as YYYY-MM-DD."),
        ("date_to=yesterday", "To: give a date as YYYY-MM-DD."),
        ("date_to=9999-12-31", "That date is out of range."),
        ("date_from=2026-02-01&date_to=2026-01-01", "From must be on or before To."),
        ("starter=" + "x" * 151, "at most 150 characters"),
        ("starter=a%00b", "Null characters are not allowed."),
    ],
)
def test_bad_inputs_answer_400_with_a_message_and_no_runs(
    support_agent, other_agent, outsider, operator, query, message
):
    make_runs(other_agent, operator, 3)
    make_runs(support_agent, outsider, 1)
    response = client_for(outsider).get("/runs/?" + query)
    assert response.status_code == 400
    assert message in response.text
    assert response.context["rows"] == []
    assert "run-row" not in response.text


def test_a_constant_number_of_queries_per_page(support_agent, other_agent, operator, assigned_reviewer):
    def count(user) -> int:
        client = client_for(user)
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/runs/").status_code == 200
        return len(queries)

    make_runs(support_agent, operator, 5)
    make_runs(other_agent, assigned_reviewer, 5)
    few = {user.pk: count(user) for user in (operator, assigned_reviewer)}
    make_runs(support_agent, operator, 45)
    make_runs(other_agent, assigned_reviewer, 45)
    many = {user.pk: count(user) for user in (operator, assigned_reviewer)}
    assert few == many
    assert max(many.values()) <= 10


def test_hostile_text_is_escaped(operator):
    agent = Agent.objects.create(slug="hostile", name=SCRIPT, objective="x", scope="x")
    Run.objects.create(agent=agent, started_by=operator, input={"reason": SCRIPT})
    response = client_for(operator).get("/runs/?starter=" + SCRIPT)
    assert SCRIPT in response.context["values"]["starter"]
    page = client_for(operator).get("/runs/").text
    assert SCRIPT not in page and "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in page
    assert SCRIPT not in response.text


def test_headers_and_sign_in(support_agent, operator):
    anonymous = Client().get("/runs/?status=failed")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    response = client_for(operator).get("/runs/")
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "<script" not in response.text and "style=" not in response.text
    assert client_for(operator).post("/runs/").status_code == 405
