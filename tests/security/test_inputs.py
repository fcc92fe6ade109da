"""Nothing lost, nobody in: what comes in through the API and the pages goes through one way.

Each class of input that once reached the code unparsed or unbounded (a body over the limit,
JSON nested past any sane depth, text PostgreSQL cannot store, integers beyond the database's
64 bits, loosely typed arguments, out-of-range filters, unknown URLs) is refused at the door,
through the real endpoints: the status, the error body in the one shape, and nothing written.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from agents import runtime
from agents.models import Run, Step, Ticket, ToolCall
from approvals.models import ApprovalRequest, ApprovalStatus, BusinessRule, Decision
from audit.models import AuditEvent
from config.api import JSONErrorMiddleware
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

RUNS = "/api/v1/agents/support/runs/"
BULK = "/api/v1/approvals/decisions/"
EVENTS = "/api/v1/audit/events/"
INT64_MAX = 2**63 - 1
SHAPE = {"detail", "code", "errors"}


# --- Helpers ---------------------------------------------------------------------------------------


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def page_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def counts() -> dict[str, int]:
    models = (Run, Step, ToolCall, ApprovalRequest, Decision, AuditEvent, BusinessRule)
    return {model.__name__: model.objects.count() for model in models}


def refused(response, status: int, code: str, *, field: str | None = None) -> dict:
    """The answer is JSON in the one shape, with this status and code (and this field at fault)."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) >= SHAPE, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], dict)
    for messages in body["errors"].values():
        assert isinstance(messages, list) and all(isinstance(m, str) for m in messages)
    if field is not None:
        assert field in body["errors"], body
    return body


def good_input(**changes) -> dict:
    return {"ticket_id": 1, "customer_email": "jane@example.com", "amount": 42, "currency": "USD", **changes}


def run_body(input_text: str) -> str:
    """A run start whose input is the given JSON text, written by hand (escapes kept as sent)."""
    return '{"input": ' + input_text + "}"


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.fixture
def approval(support_agent, starter) -> ApprovalRequest:
    """A refund waiting for a reviewer (the starter may not decide it: four-eyes)."""
    ticket = Ticket.objects.first()
    run = runtime.run_create(agent=support_agent, user=starter, payload=good_input(ticket_id=ticket.pk, amount=120))
    runtime.run_advance(run_id=run.pk)
    return ApprovalRequest.objects.get(run=run, tool="issue_refund")


def decide_url(approval: ApprovalRequest) -> str:
    return f"/api/v1/approvals/{approval.pk}/decision/"


def still_pending(approval: ApprovalRequest) -> bool:
    approval.refresh_from_db()
    return approval.status == ApprovalStatus.PENDING and approval.decided_arguments is None


# --- Bodies over the limit: 413 in JSON on the API, the page's own error page elsewhere --------------


@pytest.mark.parametrize("debug", [False, True])
def test_a_body_over_the_limit_is_413_json(settings, support_agent, starter, debug):
    settings.DEBUG = debug  # with DEBUG on, Django's answer was its 120 KB debug page
    before = counts()
    body = json.dumps({"input": good_input(reason="x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))})
    response = api_for(starter).post(RUNS, body, content_type="application/json")
    answer = refused(response, 413, "too_large")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in answer["detail"]
    assert len(response.content) < 500
    assert counts() == before


def test_a_decision_over_the_limit_is_413_json(settings, approval, assigned_reviewer):
    before = counts()
    body = json.dumps({"verdict": "reject", "comment": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    refused(
        api_for(assigned_reviewer).post(decide_url(approval), body, content_type="application/json"), 413, "too_large"
    )
    refused(api_for(assigned_reviewer).post(BULK, body, content_type="application/json"), 413, "too_large")
    assert counts() == before and still_pending(approval)


def test_a_page_body_over_the_limit_keeps_the_pages_html_error(settings, approval, assigned_reviewer):
    client = page_for(assigned_reviewer)  # signing in is audited: count after it
    before = counts()
    response = client.post(
        f"/inbox/{approval.pk}/", {"verdict": "reject", "comment": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    )
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
    assert counts() == before and still_pending(approval)


def test_a_body_that_is_not_json_is_415_json(support_agent, starter):
    before = counts()
    response = api_for(starter).post(RUNS, "input=1", content_type="application/x-www-form-urlencoded")
    refused(response, 415, "unsupported_media_type")
    assert counts() == before


# --- Nesting: 400 too_deep, never a RecursionError -----------------------------------------------------


@pytest.mark.parametrize("depth", [65, 2_000, 100_000])
def test_run_input_nested_too_deep_is_400(settings, support_agent, starter, depth):
    before = counts()
    body = run_body('{"ticket_id": 1, "extra": ' + nested(depth) + "}")
    if len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body) + 1  # the depth is what is tested here
    refused(api_for(starter).post(RUNS, body, content_type="application/json"), 400, "too_deep")
    assert counts() == before


def test_nesting_up_to_the_limit_is_parsed(support_agent, starter):
    # 64 levels in all: the body, the input object, then 62 arrays. The schema refuses the extra
    # field: a field error, proof that the parser let it through.
    body = run_body('{"ticket_id": 1, "extra": ' + nested(62) + "}")
    answer = refused(api_for(starter).post(RUNS, body, content_type="application/json"), 400, "invalid_input")
    assert "input" in answer["errors"]


def test_decision_arguments_nested_too_deep_are_400(approval, assigned_reviewer):
    before = counts()
    body = '{"verdict": "edit", "arguments": {"amount": 1, "reason": ' + nested(5_000) + "}}"
    refused(
        api_for(assigned_reviewer).post(decide_url(approval), body, content_type="application/json"), 400, "too_deep"
    )
    assert counts() == before and still_pending(approval)


# --- Text: NUL and lone surrogates, in strings and keys ------------------------------------------------


@pytest.mark.parametrize(
    ("input_text", "field"),
    [
        ('{"ticket_id": 1, "reason": "a\\u0000b"}', "input.reason"),
        ('{"ticket_id": 1, "reason": "a\\ud800b"}', "input.reason"),
        ('{"ticket_id": 1, "reason": "\\udfff"}', "input.reason"),
        ('{"ticket_id": 1, "re\\u0000son": "x"}', "input.re\\u0000son"),
        ('{"ticket_id": 1, "\\ud83d": "x"}', "input.\\ud83d"),
    ],
)
def test_text_that_cannot_be_stored_is_400(support_agent, starter, input_text, field):
    before = counts()
    response = api_for(starter).post(RUNS, run_body(input_text), content_type="application/json")
    refused(response, 400, "invalid_text", field=field)
    assert counts() == before


def test_text_that_is_not_utf8_is_400(support_agent, starter):
    before = counts()
    body = run_body('{"ticket_id": 1, "reason": "caf').encode() + b'\xe9"}}'
    refused(api_for(starter).post(RUNS, body, content_type="application/json"), 400, "invalid_text")
    assert counts() == before


def test_an_escaped_surrogate_pair_is_text_and_is_stored(support_agent, starter):
    # What an ASCII-only client sends for an emoji: a valid pair, one character.
    body = run_body(json.dumps(good_input(reason="refund \U0001f600"), ensure_ascii=True))
    assert "\\ud83d\\ude00" in body
    response = api_for(starter).post(RUNS, body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert Run.objects.get(pk=response.json()["id"]).input["reason"] == "refund \U0001f600"


def test_a_nul_in_decision_arguments_is_400(approval, assigned_reviewer):
    before = counts()
    body = '{"verdict": "edit", "arguments": {"amount": 10, "reason": "\\u0000"}}'
    response = api_for(assigned_reviewer).post(decide_url(approval), body, content_type="application/json")
    refused(response, 400, "invalid_text", field="arguments.reason")
    assert counts() == before and still_pending(approval)


# --- Numbers: integers within signed 64 bits, finite numbers, JSON only --------------------------------


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (str(INT64_MAX + 1), "number_out_of_range"),
        (str(-(2**63) - 1), "number_out_of_range"),
        ("1" + "0" * 5000, "number_out_of_range"),  # past Python's 4300 digits: no ValueError either
        ("1e400", "number_out_of_range"),
        ("NaN", "parse_error"),
        ("-Infinity", "parse_error"),
    ],
)
def test_run_input_numbers_out_of_range_are_400(support_agent, starter, number, code):
    before = counts()
    body = run_body('{"ticket_id": ' + number + ', "customer_email": "jane@example.com", "amount": 1}')
    refused(api_for(starter).post(RUNS, body, content_type="application/json"), 400, code)
    assert counts() == before


def test_the_largest_64_bit_integer_is_taken(support_agent, starter):
    response = api_for(starter).post(RUNS, {"input": good_input(ticket_id=INT64_MAX)})
    assert response.status_code == 201, response.content
    assert Run.objects.get(pk=response.json()["id"]).input["ticket_id"] == INT64_MAX


@pytest.mark.parametrize(
    ("ids", "code", "field"),
    [
        (f"[{2**64}]", "number_out_of_range", "ids.0"),
        (f'["{2**64}"]', "invalid", "ids.0"),  # DRF reads numeric strings: bounded too
        (f"[1, {INT64_MAX + 1}]", "number_out_of_range", "ids.1"),
    ],
)
def test_bulk_decision_ids_beyond_64_bits_are_400(approval, assigned_reviewer, ids, code, field):
    before = counts()
    body = '{"verdict": "approve", "ids": ' + ids + "}"
    refused(api_for(assigned_reviewer).post(BULK, body, content_type="application/json"), 400, code, field=field)
    assert counts() == before and still_pending(approval)


def test_a_key_named_twice_is_400(support_agent, starter):
    before = counts()
    body = run_body('{"ticket_id": 1, "amount": 1, "amount": 100000}')
    refused(
        api_for(starter).post(RUNS, body, content_type="application/json"), 400, "duplicate_key", field="input.amount"
    )
    assert counts() == before


def test_invalid_json_is_400_parse_error(support_agent, starter):
    before = counts()
    refused(api_for(starter).post(RUNS, '{"input": ', content_type="application/json"), 400, "parse_error")
    assert counts() == before


# --- Run input formats and tool argument types are enforced exactly ------------------------------------


@pytest.mark.parametrize(
    "email",
    ['"<script>alert(1)</script>"@example.com', "<script>@example.com", "jane@<b>example</b>.com", "jane"],
)
def test_a_run_input_email_must_be_an_address(support_agent, starter, email):
    before = counts()
    response = api_for(starter).post(RUNS, {"input": good_input(customer_email=email)})
    refused(response, 400, "invalid_input", field="input.customer_email")
    assert counts() == before


def test_a_schema_with_a_format_that_is_not_checked_is_refused(support_agent, starter):
    from django.core.exceptions import ValidationError

    from agents.definitions import agent_upsert
    from agents.demo.data import SUPPORT_AGENT

    schema = {"type": "object", "properties": {"site": {"type": "string", "format": "uri"}}}
    with pytest.raises(ValidationError, match="format uri cannot be checked"):
        agent_upsert({**SUPPORT_AGENT, "input_schema": schema})
    # An agent whose schema cannot judge input (changed behind the services' back) fails closed.
    support_agent.input_schema = schema
    support_agent.save(update_fields=["input_schema"])
    before = counts()
    response = api_for(starter).post(RUNS, {"input": {"site": "javascript:alert(1)"}})
    refused(response, 400, "invalid_input", field="input")
    assert counts() == before


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"amount": "100"}, "amount"),  # a string where the schema says number
        ({"amount": True}, "amount"),
        ({"amount": 10, "ticket_id": "1"}, "ticket_id"),
        ({"amount": 10, "ticket_id": 1.5}, "ticket_id"),
        ({"amount": 10, "currency": ["USD"]}, "currency"),
        ({"amount": 10, "ticket_id": INT64_MAX + 1}, "arguments.ticket_id"),  # the parser's own field path
    ],
)
def test_edited_arguments_must_be_exactly_typed(approval, assigned_reviewer, arguments, field):
    before = counts()
    response = api_for(assigned_reviewer).post(decide_url(approval), {"verdict": "edit", "arguments": arguments})
    code = "number_out_of_range" if field.startswith("arguments.") else "invalid_decision"
    refused(response, 400, code, field=field)
    assert counts() == before and still_pending(approval)


def test_exactly_typed_edited_arguments_are_approved(approval, assigned_reviewer):
    arguments = {**approval.arguments, "amount": 100}  # an integer is a number
    response = api_for(assigned_reviewer).post(decide_url(approval), {"verdict": "edit", "arguments": arguments})
    assert response.status_code == 200, response.content
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED and approval.decided_arguments["amount"] == 100


# --- Filters out of range: 400 (or the paginator's 404), never 500 ---------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "2026-01-01T00:00:00+99:00"}, "since"),
        ({"since": "0001-01-01T00:00:00+23:59"}, "since"),  # no UTC equivalent: was a 500
        ({"until": "9999-12-31T23:59:59-23:59"}, "until"),
        ({"since": "10000-01-01"}, "since"),
        ({"since": "2026-01-01T00:00:00\x00"}, "since"),
        ({"since": "2" * 5000}, "since"),
        ({"run": str(INT64_MAX + 1)}, "run"),
        ({"run": "1" + "0" * 5000}, "run"),
        ({"target_id": "x" * 65}, "target_id"),
        ({"action": "a\x00b"}, "action"),
        ({"agent": "a" * 101}, "agent"),
    ],
)
def test_audit_filters_out_of_range_are_400(auditor, query, field):
    refused(api_for(auditor).get(EVENTS, query), 400, "invalid", field=field)


@pytest.mark.parametrize("position", ["abc", str(INT64_MAX + 1), "-1", "1" * 5000])
def test_a_forged_audit_cursor_is_a_json_404(auditor, position):
    import base64

    cursor = base64.b64encode(f"p={position}".encode()).decode()
    refused(api_for(auditor).get(EVENTS, {"cursor": cursor}), 404, "not_found")


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"status": "pending\x00"}, 400, "invalid"),
        ({"agent": "a" * 101}, 400, "invalid"),
        ({"risk": "x" * 10_000}, 400, "invalid"),
        ({"page": "9" * 30}, 404, "not_found"),
        ({"page": "-1"}, 404, "not_found"),
    ],
)
def test_approval_filters_out_of_range_are_refused(approval, assigned_reviewer, query, status, code):
    refused(api_for(assigned_reviewer).get("/api/v1/approvals/", query), status, code)


# --- Under /api/, every answer is JSON: unknown URLs, wrong methods, server errors ----------------------


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/runs/abc/", "/api/v1/nothing-here", "/api/v2/", "/api"])
def test_an_unknown_api_url_is_a_json_404(settings, starter, debug, path):
    settings.DEBUG = debug  # DEBUG on: Django's technical 404 page, replaced as well
    refused(api_for(starter).get(path), 404, "not_found")


def test_pages_keep_their_html_404(starter):
    response = page_for(starter).get("/inbox/abc/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_a_wrong_method_is_a_json_405(starter):
    refused(api_for(starter).delete("/api/v1/agents/"), 405, "method_not_allowed")


def test_a_middlewares_error_under_the_api_is_json(settings, starter):
    # With DEBUG on, CommonMiddleware raises for a POST that lacks its trailing slash; Django's
    # answer was its HTML debug page.
    settings.DEBUG = True
    client = Client(raise_request_exception=False)
    client.force_login(starter)
    response = client.post("/api/v1/runs/1/cancel", "{}", content_type="application/json")
    body = refused(response, 500, "server_error")
    assert body == {"detail": "Server error.", "code": "server_error", "errors": {}}


def test_an_unexpected_error_under_the_api_is_a_json_500_that_tells_nothing():
    request = RequestFactory().get("/api/v1/agents/")
    middleware = JSONErrorMiddleware(lambda request: None)  # type: ignore[arg-type,return-value]
    response = middleware.process_exception(request, RuntimeError("secret table name"))
    assert response is not None and response.status_code == 500
    body = json.loads(response.content)
    assert body == {"detail": "Server error.", "code": "server_error", "errors": {}}
    assert middleware.process_exception(RequestFactory().get("/inbox/"), RuntimeError("x")) is None


def test_an_html_error_page_under_the_api_is_replaced_by_json():
    from django.http import HttpResponseServerError

    def page(request):
        response = HttpResponseServerError("<h1>Server Error (500)</h1>")
        response["Retry-After"] = "5"
        return response

    response = JSONErrorMiddleware(page)(RequestFactory().get("/api/v1/agents/"))
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert json.loads(response.content)["code"] == "server_error" and response["Retry-After"] == "5"
    assert JSONErrorMiddleware(page)(RequestFactory().get("/inbox/"))["Content-Type"].startswith("text/html")


# --- One error shape ------------------------------------------------------------------------------------


def test_every_error_has_the_one_shape(settings, approval, assigned_reviewer, starter, outsider):
    anonymous = APIClient()
    refused(anonymous.get("/api/v1/agents/"), 401, "not_authenticated")
    refused(api_for(outsider).post("/api/v1/agents/emergency-stop/", {"reason": "x"}), 403, "permission_denied")
    refused(api_for(outsider).get(f"/api/v1/approvals/{approval.pk}/"), 404, "not_found")
    body = refused(api_for(starter).post(RUNS, {"input": {"ticket_id": "one"}}), 400, "invalid_input")
    assert "input.ticket_id" in body["errors"]
    body = refused(api_for(starter).patch("/api/v1/agents/support/", {"autonomy_level": 9}), 400, "invalid")
    assert set(body["errors"]) == {"autonomy_level", "reason"}
    body = refused(api_for(starter).patch("/api/v1/agents/support/", {"reason": "x"}), 400, "invalid")
    assert body["errors"] == {"non_field_errors": ["Give autonomy_level or enabled."]}
    refused(api_for(starter).post(RUNS, [1, 2]), 400, "invalid")
    # A domain error with a field at fault, then a decision, and a second one that is too late.
    body = refused(
        api_for(assigned_reviewer).post(decide_url(approval), {"verdict": "reject"}), 400, "invalid_decision"
    )
    assert body["errors"] == {"comment": ["required"]}
    assert api_for(assigned_reviewer).post(decide_url(approval), {"verdict": "approve"}).status_code == 200
    body = refused(
        api_for(assigned_reviewer).post(decide_url(approval), {"verdict": "approve"}), 409, "already_decided"
    )
    assert body["status"] == "approved" and body["decided_by"] == assigned_reviewer.username
    # Failed sign-ins past the limit: 429 with retry_after, in the body and the header.
    settings.SIGNIN_FAILURES_PER_WINDOW = 2
    for attempt in range(2):
        refused(
            anonymous.post("/api/v1/auth/token/", {"username": "outsider", "password": f"no{attempt}"}),
            400,
            "invalid_credentials",
        )
    response = anonymous.post("/api/v1/auth/token/", {"username": "outsider", "password": PASSWORD})
    body = refused(response, 429, "throttled")
    assert body["retry_after"] > 0 and response["Retry-After"] == str(body["retry_after"])


# --- The inbox page's JSON edit mode goes through the same parser ---------------------------------------


@pytest.mark.parametrize(
    ("arguments_json", "message"),
    [
        ('{"amount": 1, "reason": ' + nested(50_000, '""') + "}", "nested deeper than 64 levels"),
        ('{"amount": 1, "reason": ' + nested(65, '""') + "}", "nested deeper than 64 levels"),
        ('{"amount": 1, "reason": "\\u0000"}', "NUL character"),
        ('{"amount": 1, "reason": "\\udc00"}', "lone UTF-16 surrogate"),
        ('{"amount": 1, "re\\ud800son": ""}', "lone UTF-16 surrogate"),
        ('{"amount": 1, "ticket_id": 99999999999999999999}', "out of range"),
        ('{"amount": 1e999}', "beyond the range of a number"),
        ('{"amount": 1, "amount": 2}', "same key twice"),
        ('{"amount": NaN}', "NaN is not a JSON value"),
        ('{"amount": "100"}', "valid number"),  # parsed, then refused by the tool's strict schema
        ("{", "not valid"),
    ],
)
def test_the_inbox_json_edit_mode_refuses_what_the_api_refuses(
    settings, approval, assigned_reviewer, arguments_json, message
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000_000  # the depth is what is tested here
    client = page_for(assigned_reviewer)  # signing in is audited: count after it
    before = counts()
    response = client.post(
        f"/inbox/{approval.pk}/", {"verdict": "edit", "edit_mode": "json", "arguments_json": arguments_json}
    )
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
    assert message in response.text, response.text[:3000]
    assert counts() == before and still_pending(approval)


def test_the_inbox_field_mode_bounds_integers(approval, assigned_reviewer):
    client = page_for(assigned_reviewer)  # signing in is audited: count after it
    before = counts()
    response = client.post(
        f"/inbox/{approval.pk}/",
        {
            "verdict": "edit",
            "edit_mode": "fields",
            "arg-ticket_id": "9" * 30,
            "arg-amount": "10",
            "arg-currency": '"USD"',
        },
    )
    assert response.status_code == 400 and "out of range" in response.text
    assert counts() == before and still_pending(approval)


def test_the_inbox_bulk_form_ignores_ids_beyond_64_bits(approval, assigned_reviewer):
    client = page_for(assigned_reviewer)  # signing in is audited: count after it
    before = counts()
    response = client.post("/inbox/bulk/", {"ids": ["9" * 30, "²"], "verdict": "approve"})
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
    assert counts() == before and still_pending(approval)


def test_a_console_rule_value_goes_through_the_same_parser(support_agent, operator):
    rule = {"tool": "issue_refund", "field": "amount", "operator": ">", "effect": "block", "agent": support_agent.pk}
    client = page_for(operator)
    before = counts()
    for value, message in [
        (nested(100), "nested deeper"),
        ('"a\\u0000"', "NUL character"),
        (str(INT64_MAX + 1), "out of range"),
    ]:
        response = client.post("/console/rules/new/", {**rule, "value": value})
        assert response.status_code == 400 and message in response.text, value
    assert counts() == before


def test_the_admins_json_fields_go_through_the_same_parser(support_agent):
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client = page_for(admin)
    before = counts()
    rule = {"tool": "issue_refund", "field": "amount", "operator": ">", "effect": "block", "enabled": "on"}
    for value in [nested(5_000), '"\\u0000"', str(INT64_MAX + 1)]:
        response = client.post("/admin/approvals/businessrule/add/", {**rule, "value": value})
        # The form again, with Django's JSON field error (it shows its own message).
        assert response.status_code == 200 and "Enter a valid JSON" in response.text
    assert counts() == before
