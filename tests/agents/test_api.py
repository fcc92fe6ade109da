from __future__ import annotations

import json

import pytest
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from agents.models import Run, RunStatus
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
    bad = client.post("/api/v1/auth/token/", {"username": "operator", "password": "nope"}, format="json")
    assert bad.status_code == 400
    token_client = APIClient(HTTP_AUTHORIZATION=f"Token {ok.json()['token']}")
    assert token_client.get("/api/v1/agents/").status_code == 200


def test_anonymous_is_refused():
    assert APIClient().get("/api/v1/agents/").status_code in (401, 403)


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
    assert field in response.json()
    assert Run.objects.count() == 0


def test_oversize_body_is_refused(support_agent, starter, settings):
    big = json.dumps({"input": {"reason": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)}})
    response = client_for(starter).post("/api/v1/agents/support/runs/", big, content_type="application/json")
    assert response.status_code in (400, 413)
    assert Run.objects.count() == 0


def test_unknown_agent_is_404(starter):
    assert client_for(starter).post("/api/v1/agents/nope/runs/", {"input": {}}, format="json").status_code == 404


def test_start_run_needs_permission(support_agent, reviewer):
    assign_perm("review_agent", reviewer, support_agent)
    response = client_for(reviewer).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json")
    assert response.status_code == 403


def test_api_client_with_object_permission_may_start_runs(support_agent):
    client_user = make_user("billing-system")
    assign_perm("start_run", client_user, support_agent)
    grant_tools(client_user, support_agent.tools)
    response = client_for(client_user).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json")
    assert response.status_code == 201


def test_disabled_agent_refuses_runs_with_409(support_agent, starter, operator):
    client = client_for(operator)
    off = client.patch("/api/v1/agents/support/", {"enabled": False, "reason": "incident 42"}, format="json")
    assert off.status_code == 200 and off.json()["enabled"] is False
    response = client_for(starter).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json")
    assert response.status_code == 409
    assert "disabled" in response.json()["detail"]


def test_level_change_is_operator_only_and_validated(support_agent, operator, reviewer):
    assign_perm("review_agent", reviewer, support_agent)
    assert (
        client_for(reviewer)
        .patch("/api/v1/agents/support/", {"autonomy_level": 3, "reason": "x"}, format="json")
        .status_code
        == 403
    )
    client = client_for(operator)
    assert client.patch("/api/v1/agents/support/", {"autonomy_level": 3}, format="json").status_code == 400
    assert (
        client.patch("/api/v1/agents/support/", {"autonomy_level": 9, "reason": "x"}, format="json").status_code == 400
    )
    five = client.patch("/api/v1/agents/support/", {"autonomy_level": 5, "reason": "x"}, format="json")
    assert five.status_code == 400 and "Level 5" in json.dumps(five.json())
    ok = client.patch("/api/v1/agents/support/", {"autonomy_level": 3, "reason": "trusted now"}, format="json")
    assert ok.status_code == 200 and ok.json()["autonomy_level"] == 3


def test_cancel(support_agent, starter, operator, outsider):
    run_id = (
        client_for(starter).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json").json()["id"]
    )
    assert client_for(outsider).post(f"/api/v1/runs/{run_id}/cancel/").status_code == 403
    response = client_for(operator).post(f"/api/v1/runs/{run_id}/cancel/", {"reason": "wrong customer"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client_for(operator).post(f"/api/v1/runs/{run_id}/cancel/").status_code == 409
    assert Run.objects.get(pk=run_id).status == RunStatus.CANCELLED


def test_run_is_hidden_from_outsiders(support_agent, starter, outsider):
    run_id = (
        client_for(starter).post("/api/v1/agents/support/runs/", {"input": good_input()}, format="json").json()["id"]
    )
    assert client_for(outsider).get(f"/api/v1/runs/{run_id}/").status_code == 404
    assert client_for(starter).get("/api/v1/runs/999999/").status_code == 404


def test_openapi_schema_is_public():
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/approvals/{approval_id}/decision/" in response.content
