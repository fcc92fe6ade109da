from __future__ import annotations

import json

import pytest
from guardian.shortcuts import assign_perm
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agents.models import Agent, Run, RunStatus
from audit.models import AuditEvent
from tests.conftest import PASSWORD, grant_tools, make_user

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def good_input(ticket_id=1):
    return {"ticket_id": ticket_id, "customer_email": "jane@example.com", "amount": 42, "currency": "USD"}


def test_token_login_and_bad_credentials(operator):
    client = APIClient()
    ok = client.post("/api/v1/auth/token/", {"username": "operator", "password": PASSWORD}, format="json")
    assert ok.status_code == 200 and ok.json()["token"]
    assert Token.objects.get(user=operator).key == ok.json()["token"]
    bad = client.post("/api/v1/auth/token/", {"username": "operator", "password": "nope"}, format="json")
    assert bad.status_code == 400
    assert bad.json() == {
        "detail": "Unable to sign in with these credentials.",
        "code": "invalid_credentials",
        "errors": {},
    }
    assert Token.objects.count() == 1  # none for the refused attempt
    [failed] = AuditEvent.objects.filter(action="auth.login_failed")
    assert failed.data["username"] == "operator" and failed.target_id == str(operator.pk)
    token_client = APIClient(HTTP_AUTHORIZATION=f"Token {ok.json()['token']}")
    listed = token_client.get("/api/v1/agents/")
    assert listed.status_code == 200 and listed.json() == []  # signed in as the operator, who sees no agent yet
    assert APIClient(HTTP_AUTHORIZATION="Token not-a-token").get("/api/v1/agents/").status_code == 401


def test_anonymous_is_refused(support_agent):
    response = APIClient().get("/api/v1/agents/")
    # 401 with the scheme to use (the first authentication class is the token's).
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
        "errors": {},
    }


def test_agent_list_is_limited_to_what_the_caller_may_see(support_agent, starter, outsider, reviewer):
    assert [a["slug"] for a in client_for(starter).get("/api/v1/agents/").json()] == ["support"]
    assert client_for(outsider).get("/api/v1/agents/").json() == []
    assign_perm("review_agent", reviewer, support_agent)
    assert [a["slug"] for a in client_for(reviewer).get("/api/v1/agents/").json()] == ["support"]


def test_start_run_and_read_it(support_agent, starter, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(starter).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["agent"] == "support"
    assert len(callbacks) == 1  # the enqueue waits for the commit
    detail = client_for(starter).get(f"/api/v1/runs/{body['id']}/").json()
    assert detail["id"] == body["id"] and detail["steps"] == [] and detail["status"] == "queued"


@pytest.mark.parametrize(
    "body,content_type,field",
    [
        ("not json", "application/json", "detail"),
        (json.dumps([1, 2]), "application/json", "detail"),
        (json.dumps({"input": "text"}), "application/json", "errors"),
        (
            json.dumps({"input": {"ticket_id": "one", "customer_email": "a@example.com", "amount": 1}}),
            "application/json",
            "errors",
        ),
        (
            json.dumps(
                {"input": {"ticket_id": 1, "customer_email": "a@example.com", "amount": 1, "reason": "x" * 100_000}}
            ),
            "application/json",
            "errors",
        ),
        (json.dumps({}), "application/json", "input"),
    ],
)
def test_bad_input_is_400_and_creates_nothing(support_agent, starter, body, content_type, field):
    response = client_for(starter).post("/api/v1/agents/support/runs/", body, content_type=content_type)
    assert response.status_code == 400, response.content
    answer = response.json()
    assert {"detail", "code", "errors"} <= set(answer)
    if field == "errors":
        assert answer["errors"]
    elif field != "detail":
        assert field in answer["errors"]
    assert Run.objects.count() == 0


def test_oversize_body_is_refused(support_agent, starter, settings):
    big = json.dumps({"input": {"reason": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)}})
    response = client_for(starter).post("/api/v1/agents/support/runs/", big, content_type="application/json")
    assert response.status_code in (400, 413)
    assert Run.objects.count() == 0


def test_unknown_agent_is_404(starter):
    response = client_for(starter).post("/api/v1/agents/nope/runs/", {"input": {}}, format="json")
    assert response.status_code == 404 and "detail" in response.json()
    assert Run.objects.count() == 0


def test_start_run_needs_permission(support_agent, reviewer):
    assign_perm("review_agent", reviewer, support_agent)
    response = client_for(reviewer).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json")
    assert response.status_code == 403
    assert response.json() == {
        "detail": "You may not start runs of this agent.",
        "code": "permission_denied",
        "errors": {},
    }
    assert Run.objects.count() == 0
    assert not AuditEvent.objects.filter(action="agents.run.created").exists()


def test_api_client_with_object_permission_may_start_runs(support_agent):
    client_user = make_user("billing-system")
    assign_perm("start_run", client_user, support_agent)
    grant_tools(client_user, support_agent.tools)
    response = client_for(client_user).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json")
    assert response.status_code == 201, response.content
    run = Run.objects.get()
    assert response.json()["id"] == run.pk
    assert (run.agent, run.started_by, run.status) == (support_agent, client_user, RunStatus.QUEUED)
    [created] = AuditEvent.objects.filter(action="agents.run.created")
    assert created.actor_id == str(client_user.pk) and created.target_id == str(run.pk)


def test_disabled_agent_refuses_runs_with_409(support_agent, starter, operator):
    client = client_for(operator)
    off = client.patch("/api/v1/agents/support/", {"enabled": False, "reason": "incident 42"}, format="json")
    assert off.status_code == 200 and off.json()["enabled"] is False
    response = client_for(starter).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json")
    assert response.status_code == 409
    assert "disabled" in response.json()["detail"]
    assert Run.objects.count() == 0
    [switch] = AuditEvent.objects.filter(action="agents.agent.kill_switch")
    assert switch.actor_id == str(operator.pk) and switch.data["reason"] == "incident 42"


def test_level_change_is_operator_only_and_validated(support_agent, operator, reviewer):
    assign_perm("review_agent", reviewer, support_agent)
    level = support_agent.autonomy_level
    assert level != 3

    def unchanged() -> bool:
        return (
            Agent.objects.get(pk=support_agent.pk).autonomy_level == level
            and not AuditEvent.objects.filter(action="agents.agent.level_changed").exists()
        )

    refused = client_for(reviewer).patch("/api/v1/agents/support/", {"autonomy_level": 3, "reason": "x"}, format="json")
    assert refused.status_code == 403 and unchanged()
    client = client_for(operator)
    no_reason = client.patch("/api/v1/agents/support/", {"autonomy_level": 3}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["errors"] and unchanged()
    nine = client.patch("/api/v1/agents/support/", {"autonomy_level": 9, "reason": "x"}, format="json")
    assert nine.status_code == 400 and "autonomy_level" in nine.json()["errors"] and unchanged()
    five = client.patch("/api/v1/agents/support/", {"autonomy_level": 5, "reason": "x"}, format="json")
    assert five.status_code == 400 and "Level 5" in json.dumps(five.json()) and unchanged()
    ok = client.patch("/api/v1/agents/support/", {"autonomy_level": 3, "reason": "trusted now"}, format="json")
    assert ok.status_code == 200 and ok.json()["autonomy_level"] == 3
    assert Agent.objects.get(pk=support_agent.pk).autonomy_level == 3
    [changed] = AuditEvent.objects.filter(action="agents.agent.level_changed")
    assert changed.actor_id == str(operator.pk)
    assert changed.data == {"tool": None, "old": level, "new": 3, "reason": "trusted now"}


def test_cancel(support_agent, starter, operator, outsider):
    run_id = (
        client_for(starter).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json").json()["id"]
    )
    assert client_for(outsider).post(f"/api/v1/runs/{run_id}/cancel/").status_code == 403
    assert Run.objects.get(pk=run_id).status == RunStatus.QUEUED  # the outsider changed nothing
    response = client_for(operator).post(f"/api/v1/runs/{run_id}/cancel/", {"reason": "wrong customer"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client_for(operator).post(f"/api/v1/runs/{run_id}/cancel/").status_code == 409
    assert Run.objects.get(pk=run_id).status == RunStatus.CANCELLED


def test_run_is_hidden_from_outsiders(support_agent, starter, outsider):
    run_id = (
        client_for(starter).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json").json()["id"]
    )
    hidden = client_for(outsider).get(f"/api/v1/runs/{run_id}/")
    missing = client_for(outsider).get("/api/v1/runs/999999/")
    # The same answer for a run that exists and one that does not: others' run ids stay unknown.
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json() == {"detail": "No such run.", "code": "not_found", "errors": {}}


def test_openapi_schema_is_public():
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/approvals/{approval_id}/decision/" in response.content
