"""The OpenAPI schema at /api/schema/ describes every body the API takes and returns."""

from __future__ import annotations

import datetime as dt
import re

import jsonschema
import pytest
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

ERROR_REF = "#/components/schemas/Error"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def schema():
    generated = SchemaGenerator().get_schema(request=None, public=True)
    # get_schema() starts from a clean slate, so what is in the caches now is this schema's.
    warnings = dict(GENERATOR_STATS._warn_cache)
    errors = dict(GENERATOR_STATS._error_cache)
    return {"schema": generated, "warnings": warnings, "errors": errors}


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def json_schema_of(body):
    return body.get("content", {}).get("application/json", {}).get("schema")


def resolve(schema, node):
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def is_free_form(schema, node):
    """An object of unknown shape: what ``responses={200: dict}`` gives."""
    node = resolve(schema, node)
    if node.get("type") == "array":
        return is_free_form(schema, node.get("items", {}))
    if any(key in node for key in ("allOf", "oneOf", "anyOf")):
        return False
    return node.get("type", "object") == "object" and not node.get("properties")


def test_the_api_has_operations(schema):
    assert len(list(operations(schema["schema"]))) >= 14


def test_no_success_response_is_a_free_form_object(schema):
    schema = schema["schema"]
    free_form = []
    for name, operation in operations(schema):
        successes = {code: body for code, body in operation["responses"].items() if code.startswith("2")}
        assert successes, f"{name} documents no success response"
        for code, body in successes.items():
            body_schema = json_schema_of(body)
            if body_schema is None or is_free_form(schema, body_schema):
                free_form.append(f"{name} {code}")
    assert free_form == []


def test_every_operation_documents_its_errors_with_the_error_component(schema):
    schema = schema["schema"]
    for name, operation in operations(schema):
        errors = {code: body for code, body in operation["responses"].items() if code.startswith("4")}
        assert errors, f"{name} documents no 4xx status"
        for code, body in errors.items():
            assert json_schema_of(body) == {"$ref": ERROR_REF}, f"{name} {code}"
        path = name.split(" ", 1)[1]
        if path != "/api/v1/auth/token/":  # the only endpoint open to anyone
            assert "401" in errors, name
        if "{" in path:
            assert "404" in errors, name
        if "requestBody" in operation:
            # The parser answers these before the view: invalid JSON, too large, not JSON.
            assert {"400", "413", "415"} <= set(errors), name


def test_the_error_component_has_the_handlers_shape(schema):
    error = schema["schema"]["components"]["schemas"]["Error"]
    properties = error["properties"]
    assert properties["detail"]["type"] == "string"
    assert properties["code"]["type"] == "string"
    assert properties["errors"] == {
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "description": properties["errors"]["description"],
    }
    # One shape for every error: these three always, extra keys only where a code adds them.
    assert sorted(error["required"]) == ["code", "detail", "errors"]
    assert {"retry_after", "status", "decided_by", "arguments", "arguments_hash"} <= set(properties)


@pytest.mark.parametrize(
    "method,path,component",
    [
        ("post", "/api/v1/auth/token/", "TokenRequest"),
        ("post", "/api/v1/approvals/decisions/", "BulkDecisionRequest"),
        ("post", "/api/v1/agents/emergency-stop/", "EmergencyStopRequest"),
        ("post", "/api/v1/runs/{run_id}/cancel/", "RunCancelRequest"),
        ("post", "/api/v1/agents/{slug}/runs/", "RunCreateRequest"),
        ("patch", "/api/v1/agents/{slug}/", "PatchedAgentUpdateRequest"),
        ("post", "/api/v1/approvals/{approval_id}/decision/", "DecisionInput"),
    ],
)
def test_request_bodies_have_components_of_their_own(schema, method, path, component):
    body = schema["schema"]["paths"][path][method]["requestBody"]
    for content in body["content"].values():
        assert content["schema"] == {"$ref": f"#/components/schemas/{component}"}


def test_request_components_are_not_shared(schema):
    refs = [
        json_schema_of(operation["requestBody"])["$ref"]
        for _, operation in operations(schema["schema"])
        if "requestBody" in operation
    ]
    assert len(refs) == len(set(refs))
    assert "Input" not in schema["schema"]["components"]["schemas"]


def test_no_component_name_collides(schema):
    collisions = [message for message in schema["warnings"] if re.search("identical names|collision", message)]
    assert collisions == []
    assert schema["warnings"] == {} and schema["errors"] == {}


def test_every_ref_resolves(schema):
    schema = schema["schema"]
    text = repr(schema)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in schema["components"]["schemas"], name


def test_the_schema_validates_without_warnings(tmp_path):
    # Raises SchemaGenerationError on a warning, SchemaValidationError on an invalid schema.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3")


def test_the_schema_is_served(db):
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    assert "Error" in response.json()["components"]["schemas"]


# --- The serializers reproduce what the API has always sent -----------------------------------------


def test_the_approval_serializer_passes_approval_payload_through_unchanged():
    from agents.models import Agent
    from approvals.events import approval_payload
    from approvals.models import ApprovalRequest
    from approvals.serializers import ApprovalSerializer

    moment = dt.datetime(2026, 11, 24, 9, 30, 0, 123456, tzinfo=dt.UTC)
    approval = ApprovalRequest(
        id=7,
        agent=Agent(slug="support", name="Support agent"),
        kind="approval",
        tool="issue_refund",
        arguments={"ticket_id": 1, "amount": 120, "nested": {"a": [1, None]}},
        decided_arguments=None,
        arguments_hash="0" * 64,
        rationale="",
        risk_class="financial",
        policy_reason="financial tool",
        status="pending",
        required_approvals=1,
        approvals_count=0,
        created_at=moment,
        deadline=moment + dt.timedelta(hours=1),
    )
    payload = approval_payload(approval)
    data = ApprovalSerializer(payload).data
    # Same keys (approval_payload grew a key? describe it in ApprovalSerializer), same values, same order.
    assert list(data) == list(payload)
    assert data == payload
    assert data["created_at"] == "2026-11-24T09:30:00.123456+00:00"  # not DRF's "Z" form


# --- Real answers match the schema ------------------------------------------------------------------


def openapi_to_json_schema(schema, node):
    """Inline $refs and turn OpenAPI 3.0 ``nullable`` into JSON Schema, for jsonschema."""
    if isinstance(node, list):
        return [openapi_to_json_schema(schema, item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return openapi_to_json_schema(schema, resolve(schema, node))
    converted = {key: openapi_to_json_schema(schema, value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def assert_matches(schema, response, method, path):
    operation = schema["paths"][path][method]
    body = operation["responses"][str(response.status_code)]
    validator = jsonschema.Draft202012Validator(openapi_to_json_schema(schema, json_schema_of(body)))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(response.json())]
    assert errors == [], f"{method.upper()} {path} {response.status_code}: {errors}"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_agent_and_run_answers_match_the_schema(schema, support_agent, starter, reviewer):
    schema = schema["schema"]
    anonymous = APIClient()
    token = anonymous.post("/api/v1/auth/token/", {"username": "operator", "password": PASSWORD}, format="json")
    assert token.status_code == 200
    assert_matches(schema, token, "post", "/api/v1/auth/token/")
    bad = anonymous.post("/api/v1/auth/token/", {"username": "operator", "password": "nope"}, format="json")
    assert bad.status_code == 400
    assert_matches(schema, bad, "post", "/api/v1/auth/token/")
    assert_matches(schema, anonymous.get("/api/v1/agents/"), "get", "/api/v1/agents/")

    operator = client_for(starter)
    assert_matches(schema, operator.get("/api/v1/agents/"), "get", "/api/v1/agents/")
    assert_matches(schema, operator.get("/api/v1/agents/support/"), "get", "/api/v1/agents/{slug}/")
    assert_matches(schema, operator.get("/api/v1/agents/nope/"), "get", "/api/v1/agents/{slug}/")
    bad_tool = operator.patch(
        "/api/v1/agents/support/", {"tool": "nope", "enabled": True, "reason": "x"}, format="json"
    )
    assert bad_tool.status_code == 400
    assert_matches(schema, bad_tool, "patch", "/api/v1/agents/{slug}/")

    good_input = {"ticket_id": 1, "customer_email": "jane@example.com", "amount": 42, "currency": "USD"}
    created = operator.post("/api/v1/agents/support/runs/", {"input": good_input}, format="json")
    assert created.status_code == 201
    assert_matches(schema, created, "post", "/api/v1/agents/{slug}/runs/")
    invalid = operator.post("/api/v1/agents/support/runs/", {"input": "text"}, format="json")
    assert invalid.status_code == 400
    assert_matches(schema, invalid, "post", "/api/v1/agents/{slug}/runs/")
    run_id = created.json()["id"]
    assert_matches(schema, operator.get(f"/api/v1/runs/{run_id}/"), "get", "/api/v1/runs/{run_id}/")
    cancelled = operator.post(f"/api/v1/runs/{run_id}/cancel/", {"reason": "test"}, format="json")
    assert cancelled.status_code == 200
    assert_matches(schema, cancelled, "post", "/api/v1/runs/{run_id}/cancel/")
    again = operator.post(f"/api/v1/runs/{run_id}/cancel/", {}, format="json")
    assert again.status_code == 409
    assert_matches(schema, again, "post", "/api/v1/runs/{run_id}/cancel/")

    refused = client_for(reviewer).post("/api/v1/agents/emergency-stop/", {"reason": "x"}, format="json")
    assert refused.status_code == 403
    assert_matches(schema, refused, "post", "/api/v1/agents/emergency-stop/")
    stop = operator.post("/api/v1/agents/emergency-stop/", {"reason": "test"}, format="json")
    assert stop.status_code == 200 and stop.json() == {"stopped": 1}
    assert_matches(schema, stop, "post", "/api/v1/agents/emergency-stop/")


@pytest.mark.django_db
def test_approval_and_audit_answers_match_the_schema(schema, support_agent, starter, assigned_reviewer, auditor):
    from agents import runtime
    from approvals.models import ApprovalRequest

    schema = schema["schema"]
    run = runtime.run_create(
        agent=support_agent,
        user=starter,
        payload={"ticket_id": 1, "customer_email": "jane@example.com", "amount": 120, "currency": "USD"},
    )
    runtime.run_advance(run_id=run.pk)
    approval = ApprovalRequest.objects.get(run=run, tool="issue_refund")

    inbox = client_for(assigned_reviewer)
    listed = inbox.get("/api/v1/approvals/")
    assert listed.json()["count"] == 1
    assert_matches(schema, listed, "get", "/api/v1/approvals/")
    assert_matches(schema, inbox.get("/api/v1/approvals/?status=bogus"), "get", "/api/v1/approvals/")
    assert_matches(schema, inbox.get("/api/v1/approvals/?page=9"), "get", "/api/v1/approvals/")
    detail = inbox.get(f"/api/v1/approvals/{approval.pk}/")
    assert detail.json()["history"] and detail.json()["run_status"] == "waiting"
    assert_matches(schema, detail, "get", "/api/v1/approvals/{approval_id}/")
    assert_matches(schema, inbox.get("/api/v1/approvals/999/"), "get", "/api/v1/approvals/{approval_id}/")
    path = "/api/v1/approvals/{approval_id}/decision/"
    decided = inbox.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json")
    assert decided.status_code == 200 and decided.json()["decisions"]
    assert_matches(schema, decided, "post", path)
    again = inbox.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_decided"
    assert_matches(schema, again, "post", path)
    malformed = inbox.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "maybe"}, format="json")
    assert_matches(schema, malformed, "post", path)
    bulk = inbox.post("/api/v1/approvals/decisions/", {"ids": [approval.pk, 999], "verdict": "approve"}, format="json")
    assert [(r["id"], r["status"]) for r in bulk.json()["results"]] == [(approval.pk, 409), (999, 404)]
    assert_matches(schema, bulk, "post", "/api/v1/approvals/decisions/")

    audit = client_for(auditor)
    assert_matches(schema, audit.get("/api/v1/audit/head/"), "get", "/api/v1/audit/head/")
    assert_matches(schema, audit.get("/api/v1/audit/events/?page_size=2"), "get", "/api/v1/audit/events/")
    assert_matches(schema, audit.get("/api/v1/audit/events/?since=yesterday"), "get", "/api/v1/audit/events/")
    assert_matches(schema, inbox.get("/api/v1/audit/head/"), "get", "/api/v1/audit/head/")
