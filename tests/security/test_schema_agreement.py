"""The API refuses what its schema rules out, and its schema rules out what the API refuses.

One case for each disagreement the Schemathesis suite (test_schema_fuzz.py) found, pinned here
through the Django test client where it is quick to read: values of another JSON type that DRF
used to convert, query parameters given empty that it used to ignore, page parameters it used
to guess at; and the schema's side of it, for bodies it used to describe as allowing more.
"""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from agents.models import Agent
from approvals.models import ApprovalRequest, ApprovalStatus, Decision
from audit.models import AuditEvent
from tests.pages import waiting_refund

pytestmark = pytest.mark.django_db

JSON_VALUE = {"$ref": "#/components/schemas/JSONValue"}


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def invalid(response, *fields: str) -> dict:
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["code"] == "invalid" and set(body["errors"]) == set(fields), body
    return body


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture
def approval(support_agent, starter, assigned_reviewer) -> ApprovalRequest:
    return waiting_refund(support_agent, starter)


# --- Body values have the JSON type the schema gives them --------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": 0}, "reason"),  # was taken as the text "0"
        ({"autonomy_level": "3", "reason": "x"}, "autonomy_level"),  # was taken as 3
        ({"autonomy_level": 3.0, "reason": "x"}, "autonomy_level"),
        ({"enabled": "false", "reason": "x"}, "enabled"),  # was taken as False: the kill switch
        ({"enabled": 0, "reason": "x"}, "enabled"),
        ({"enabled": True, "reason": ["x"]}, "reason"),
    ],
)
def test_an_agent_change_of_another_json_type_is_refused(support_agent, operator, body, field):
    before = AuditEvent.objects.count()
    invalid(api_for(operator).patch("/api/v1/agents/support/", body, format="json"), field)
    agent = Agent.objects.get(pk=support_agent.pk)
    assert (agent.autonomy_level, agent.enabled) == (2, True)
    assert AuditEvent.objects.count() == before


def test_the_emergency_stop_and_the_token_endpoint_take_text_only(support_agent, operator):
    invalid(api_for(operator).post("/api/v1/agents/emergency-stop/", {"reason": 0}, format="json"), "reason")
    assert Agent.objects.get(pk=support_agent.pk).enabled
    answer = APIClient().post("/api/v1/auth/token/", {"username": 1, "password": 2}, format="json")
    invalid(answer, "username", "password")


def test_decisions_take_their_fields_as_typed(approval, assigned_reviewer):
    client = api_for(assigned_reviewer)
    url = f"/api/v1/approvals/{approval.pk}/decision/"
    invalid(client.post(url, {"verdict": "reject", "comment": 12}, format="json"), "comment")
    invalid(client.post(url, {"verdict": 1}, format="json"), "verdict")
    body = invalid(
        client.post("/api/v1/approvals/decisions/", {"ids": [str(approval.pk)], "verdict": "approve"}, format="json"),
        "ids.0",
    )
    assert body["errors"]["ids.0"] == ["Must be an integer."]
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING and not Decision.objects.exists()
    # Rightly typed, the same requests are taken.
    answer = client.post("/api/v1/approvals/decisions/", {"ids": [approval.pk], "verdict": "approve"}, format="json")
    assert answer.json()["results"] == [{"id": approval.pk, "status": 200, "approval_status": "approved"}]


# --- Query parameters: empty is not absent, a page is a number ----------------------------------------


@pytest.mark.parametrize("query", ["status=", "agent=", "risk=&status=pending", "order="])
def test_an_approval_filter_given_empty_is_refused(approval, assigned_reviewer, query):
    (field,) = [part.split("=")[0] for part in query.split("&") if part.endswith("=")]
    invalid(api_for(assigned_reviewer).get(f"/api/v1/approvals/?{query}"), field)


@pytest.mark.parametrize("query", ["actor=", "actor=%20%20", "since=", "run="])
def test_an_audit_filter_given_empty_or_blank_is_refused(auditor, query):
    invalid(api_for(auditor).get(f"/api/v1/audit/events/?{query}"), query.split("=")[0])


@pytest.mark.parametrize("page", ["", "last", "\u0661", "1.0", "0"])
def test_an_approval_page_that_is_not_a_page_number_is_a_404(approval, assigned_reviewer, page):
    answer = api_for(assigned_reviewer).get("/api/v1/approvals/", {"page": page})
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    assert api_for(assigned_reviewer).get("/api/v1/approvals/", {"page": "1"}).json()["count"] == 1


@pytest.mark.parametrize("size", ["", "0", "-1", "ten", "\u0661", "9" * 30])
def test_an_audit_page_size_that_is_not_a_number_from_one_is_refused(auditor, size):
    invalid(api_for(auditor).get("/api/v1/audit/events/", {"page_size": size}), "page_size")


def test_an_audit_page_size_over_the_maximum_is_the_maximum(auditor):
    answer = api_for(auditor).get("/api/v1/audit/events/", {"page_size": "100000"})
    assert answer.status_code == 200


# --- The schema says what the views require ---------------------------------------------------------


def component(schema, name: str) -> dict:
    return schema["components"]["schemas"][name]


def test_an_agent_change_requires_a_reason_and_a_level_or_the_switch(schema):
    body = component(schema, "PatchedAgentUpdateRequest")
    assert body["required"] == ["reason"]
    assert body["anyOf"] == [{"required": ["autonomy_level"]}, {"required": ["enabled"]}]
    assert body["properties"]["reason"] | {"minLength": 1, "pattern": r"\S"} == body["properties"]["reason"]


def test_text_that_may_not_be_blank_is_described_so(schema):
    assert component(schema, "EmergencyStopRequest")["properties"]["reason"]["pattern"] == r"\S"
    token = component(schema, "TokenRequest")["properties"]
    assert token["username"]["minLength"] == 1 and token["username"]["pattern"] == r"\S"
    assert token["password"]["minLength"] == 1 and "pattern" not in token["password"]  # passwords are not trimmed
    # A field with a pattern of its own keeps it.
    assert component(schema, "DecisionInput")["properties"]["arguments_hash"]["pattern"] == "^[0-9a-f]{64}$"
    # Optional blank text stays optional blank text.
    assert "minLength" not in component(schema, "RunCancelRequest")["properties"]["reason"]


def test_free_json_in_requests_is_what_the_parser_reads(schema):
    value = component(schema, "JSONValue")
    integer = next(branch for branch in value["anyOf"] if branch.get("type") == "integer")
    assert (integer["minimum"], integer["maximum"]) == (-(2**63), 2**63 - 1)
    assert component(schema, "RunCreateRequest")["properties"]["input"]["additionalProperties"] == JSON_VALUE
    assert component(schema, "DecisionInput")["properties"]["arguments"] == JSON_VALUE
    for name in ("RunCreateRequest", "DecisionInput", "BulkDecisionRequest", "TokenRequest"):
        assert component(schema, name)["additionalProperties"] == JSON_VALUE, name
    # Answers are described as they were: what is stored, passed through.
    assert component(schema, "RunOutput")["properties"]["input"] == {}
    assert component(schema, "Approval")["properties"]["arguments"]["additionalProperties"] == {}


def test_query_and_header_parameters_state_their_bounds(schema):
    def parameter(path: str, method: str, name: str) -> dict:
        return next(p for p in schema["paths"][path][method]["parameters"] if p["name"] == name)["schema"]

    assert parameter("/api/v1/approvals/", "get", "page")["minimum"] == 1
    assert parameter("/api/v1/audit/events/", "get", "page_size")["minimum"] == 1
    key = parameter("/api/v1/agents/{slug}/runs/", "post", "Idempotency-Key")
    assert (key["minLength"], key["maxLength"], key["pattern"]) == (1, 255, r"\S")
