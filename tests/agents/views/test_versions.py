"""The versions page and the versions API: operators only, CSRF, bad input changes nothing."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from agents.models import Agent, AgentVersion
from agents.operations import agent_set_level
from audit.models import AuditEvent
from tests.pages import client_for

pytestmark = pytest.mark.django_db


def page(slug: str) -> str:
    return f"/console/agents/{slug}/versions/"


def test_the_versions_page_shows_each_version_with_its_diff_author_and_reason(support_agent, operator):
    agent_set_level(agent=support_agent, level=3, user=operator, reason="<b>a month</b> of clean refunds")
    response = client_for(operator).get(page(support_agent.slug))
    assert response.status_code == 200
    text = response.text
    assert 'id="version-2"' in text and 'id="version-1"' in text
    assert '<strong id="current-version">v2</strong>' in text
    assert 'data-field="autonomy_level"' in text and "Changes from v1" in text
    # Model- and person-written text is escaped.
    assert "&lt;b&gt;a month&lt;/b&gt; of clean refunds" in text and "<b>a month</b>" not in text
    assert "Make v1 current" in text and "Make v2 current" not in text


def test_the_versions_page_and_its_forms_are_for_operators_only(support_agent, assigned_reviewer, outsider, auditor):
    for user in (assigned_reviewer, outsider, auditor):
        client = client_for(user)
        assert client.get(page(support_agent.slug)).status_code == 403
        refused = client.post(f"{page(support_agent.slug)}rollback/", {"version": 1, "reason": "x"})
        assert refused.status_code == 403
        started = client.post(
            f"/console/agents/{support_agent.slug}/canary/", {"version": 1, "share": 5, "reason": "x"}
        )
        assert started.status_code == 403
    assert (
        not AuditEvent.objects.filter(action__startswith="agents.version.")
        .exclude(action="agents.version.created")
        .exists()
    )


def test_the_forms_need_csrf(support_agent, operator):
    agent_set_level(agent=support_agent, level=3, user=operator, reason="trusted")
    client = client_for(operator, csrf=True)
    assert client.post(f"{page(support_agent.slug)}rollback/", {"version": 1, "reason": "x"}).status_code == 403
    assert Agent.objects.get(pk=support_agent.pk).current_version.number == 2


def test_rollback_candidate_canary_and_promote_through_the_page(support_agent, operator):
    agent_set_level(agent=support_agent, level=3, user=operator, reason="trusted")
    client = client_for(operator)
    rolled = client.post(f"{page(support_agent.slug)}rollback/", {"version": 1, "reason": "back to waiting"})
    assert rolled.status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).current_version.number == 1
    assert AuditEvent.objects.get(action="agents.version.rolled_back").actor_repr == "operator"

    behaviour = json.dumps({"system_prompt": "Be brief.", "max_steps": 8})
    made = client.post(f"{page(support_agent.slug)}candidate/", {"behaviour": behaviour, "reason": "brief"})
    assert made.status_code == 302
    candidate = AgentVersion.objects.get(agent=support_agent, number=3)
    assert candidate.diff == {"system_prompt": {"old": "", "new": "Be brief."}, "max_steps": {"old": 20, "new": 8}}
    started = client.post(
        f"/console/agents/{support_agent.slug}/canary/", {"version": 3, "share": 10, "reason": "10 %"}
    )
    assert started.status_code == 302
    shown = client.get(page(support_agent.slug)).text
    assert "v3 for 10 % of new runs" in shown and "candidate · 10 %" in shown
    promoted = client.post(f"/console/agents/{support_agent.slug}/canary/promote/", {"reason": "fine"})
    assert promoted.status_code == 302
    agent = Agent.objects.get(pk=support_agent.pk)
    assert agent.current_version_id == candidate.pk and agent.system_prompt == "Be brief." and agent.max_steps == 8


@pytest.mark.parametrize(
    ("path", "data", "status"),
    [
        ("versions/rollback/", {"version": 1, "reason": "current already"}, 409),
        ("versions/rollback/", {"version": 99, "reason": "unknown"}, 404),
        ("versions/rollback/", {"version": "one", "reason": "x"}, 400),
        ("versions/rollback/", {"version": 1}, 400),
        ("versions/candidate/", {"behaviour": "{not json", "reason": "x"}, 400),
        ("versions/candidate/", {"behaviour": "[1, 2]", "reason": "x"}, 400),
        ("versions/candidate/", {"behaviour": '{"slug": "other"}', "reason": "x"}, 400),
        ("versions/candidate/", {"behaviour": '{"autonomy_level": 9}', "reason": "x"}, 400),
        ("versions/candidate/", {"behaviour": "{" + " " * 70_000 + "}", "reason": "x"}, 400),
        ("canary/", {"version": 1, "share": 10, "reason": "the current one"}, 409),
        ("canary/", {"version": 1, "share": 101, "reason": "x"}, 400),
        ("canary/promote/", {"reason": "no candidate"}, 409),
        ("canary/rollback/", {"reason": "no candidate"}, 409),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(support_agent, operator, path, data, status):
    client = client_for(operator)
    before = AuditEvent.objects.count()
    response = client.post(f"/console/agents/{support_agent.slug}/{path}", data)
    assert response.status_code == status
    if status != 404:
        assert 'role="alert"' in response.text
    assert AgentVersion.objects.filter(agent=support_agent).count() == 1
    agent = Agent.objects.get(pk=support_agent.pk)
    assert agent.candidate_version_id is None and agent.canary_share == 0
    assert AuditEvent.objects.count() == before


def test_the_versions_api_is_read_only_for_operators(support_agent, operator, assigned_reviewer):
    agent_set_level(agent=support_agent, level=3, user=operator, reason="trusted")
    api = APIClient()
    api.force_authenticate(operator)
    listed = api.get(f"/api/v1/agents/{support_agent.slug}/versions/")
    assert listed.status_code == 200
    newest, first = listed.json()
    assert newest["number"] == 2 and newest["based_on"] == 1 and newest["author"] == "operator"
    assert newest["diff"] == {"autonomy_level": {"old": 2, "new": 3}} and newest["reason"] == "trusted"
    assert first["number"] == 1 and first["behaviour"]["autonomy_level"] == 2
    assert api.post(f"/api/v1/agents/{support_agent.slug}/versions/", {}, format="json").status_code == 405
    assert api.get("/api/v1/agents/nobody/versions/").status_code == 404
    detail = api.get(f"/api/v1/agents/{support_agent.slug}/").json()
    assert (detail["current_version"], detail["candidate_version"], detail["canary_share"]) == (2, None, 0)
    reviewer = APIClient()
    reviewer.force_authenticate(assigned_reviewer)
    refused = reviewer.get(f"/api/v1/agents/{support_agent.slug}/versions/")
    assert refused.status_code == 403 and refused.json()["code"]


def test_the_versions_page_reads_in_a_fixed_number_of_queries(support_agent, operator):
    client = client_for(operator)
    client.get(page(support_agent.slug))
    with CaptureQueriesContext(connection) as few:
        client.get(page(support_agent.slug))
    for level in (3, 2, 3, 2):
        agent_set_level(agent=support_agent, level=level, user=operator, reason="flip")
    with CaptureQueriesContext(connection) as many:
        assert 'id="version-5"' in client.get(page(support_agent.slug)).text
    assert len(many) == len(few)
