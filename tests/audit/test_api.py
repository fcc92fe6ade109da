from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import audit_record
from tests.audit.conftest import sealed

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/audit/events/"
HEAD = "/api/v1/audit/head/"


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api(auditor) -> APIClient:
    return client_for(auditor)


@pytest.fixture
def support_agent(db):
    """An agent made without audit events of its own (the shared fixture's upsert and rule seed
    write some): these tests count and filter the whole log."""
    from agents.models import Agent

    return Agent.objects.create(slug="support", name="Support", objective="Help customers.", scope="Tickets.")


@pytest.fixture
def run(support_agent):
    from agents.models import Run

    return Run.objects.create(agent=support_agent)


@pytest.fixture
def events(reviewer, operator, support_agent, run):
    written = {
        "decided": audit_record(actor=reviewer, action="approvals.request.decided", target=run, data={"v": "approve"}),
        "level": audit_record(actor=operator, action="agents.agent.level_changed", target=support_agent),
        "verdict": audit_record(actor="policy", action="approvals.policy.verdict", target=run),
        "step": audit_record(actor=support_agent, action="agents.step.reasoning", target=run),
        "login": audit_record(actor=reviewer, action="auth.login", target=reviewer),
    }
    return dict(zip(written, sealed(*written.values()), strict=True))


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_anonymous_is_refused(events):
    for url in (EVENTS, HEAD):
        response = client_for(None).get(url)
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
        # and nothing else
        assert response.json() == {
            "detail": "Authentication credentials were not provided.",
            "code": "not_authenticated",
            "errors": {},
        }


@pytest.mark.parametrize("persona", ["reviewer", "operator", "outsider"])
def test_non_auditors_get_403(request, persona):
    user = request.getfixturevalue(persona)
    for url in (EVENTS, HEAD):
        response = client_for(user).get(url)
        assert response.status_code == 403
        assert response.json()["detail"] == "Only auditors may read the audit log."


def test_token_auth_works_for_an_auditor(auditor):
    from rest_framework.authtoken.models import Token

    [event] = sealed(audit_record(actor=None, action="tests.api.token"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=auditor).key}")
    assert ids(client.get(EVENTS)) == [event.id]
    assert client.get(HEAD).json()["head_hash"] == event.hash


def test_superuser_may_read(events):
    admin = User.objects.create_superuser("root", "root@example.com", "x")
    assert len(ids(client_for(admin).get(EVENTS))) == len(events)


def test_newest_first_with_every_field(api, events, run, reviewer):
    response = api.get(EVENTS)
    assert ids(response) == sorted((event.id for event in events.values()), reverse=True)
    row = next(r for r in response.json()["results"] if r["id"] == events["decided"].id)
    assert row == {
        "id": events["decided"].id,
        "created_at": row["created_at"],
        "actor_type": "user",
        "actor_id": str(reviewer.pk),
        "actor_repr": "reviewer",
        "action": "approvals.request.decided",
        "target_type": "agents.run",
        "target_id": str(run.pk),
        "target_repr": str(run),
        "agent_slug": run.agent.slug,
        "run_id": run.pk,
        "data": {"v": "approve"},
        "content_hash": events["decided"].content_hash,
        "status": "sealed",
        "sequence": events["decided"].sequence,
        "prev_hash": events["decided"].prev_hash,
        "hash": events["decided"].hash,
    }


def test_a_pending_event_is_listed_as_pending(api):
    event = audit_record(actor=None, action="tests.api.pending")
    [row] = api.get(EVENTS).json()["results"]
    assert row["id"] == event.id and row["status"] == "pending"
    assert (row["sequence"], row["prev_hash"], row["hash"]) == (None, None, None)
    assert row["content_hash"] == event.content_hash and len(event.content_hash) == 64


def test_filters(api, events, run, support_agent, reviewer):
    def only(**params) -> set[int]:
        return set(ids(api.get(EVENTS, params)))

    e = {name: event.id for name, event in events.items()}
    assert only(action="auth.login") == {e["login"]}
    assert only(action_prefix="approvals.") == {e["decided"], e["verdict"]}
    assert only(actor="reviewer") == {e["decided"], e["login"]}
    assert only(actor=f"agent:{support_agent.slug}") == {e["step"]}
    assert only(actor_type="system") == {e["verdict"]}
    assert only(target_type="agents.agent", target_id=str(support_agent.pk)) == {e["level"]}
    assert only(target_type="auth.user", target_id=str(reviewer.pk)) == {e["login"]}
    assert only(run=run.pk) == {e["decided"], e["verdict"], e["step"]}
    assert only(agent=support_agent.slug) == {e["decided"], e["level"], e["verdict"], e["step"]}
    assert only(action="approvals.policy.verdict", run=run.pk) == {e["verdict"]}
    assert only(action="no.such.action") == set()


def test_time_range(api, events):
    stamps = {name: AuditEvent.objects.get(pk=event.pk).created_at for name, event in events.items()}
    middle = stamps["verdict"]
    newer = set(ids(api.get(EVENTS, {"since": middle.isoformat()})))
    older = set(ids(api.get(EVENTS, {"until": middle.isoformat()})))
    assert events["verdict"].id in newer and events["verdict"].id not in older
    assert newer | older == {event.id for event in events.values()} and not newer & older
    today = middle.date()
    assert len(ids(api.get(EVENTS, {"since": today.isoformat()}))) == len(events)
    assert ids(api.get(EVENTS, {"until": today.isoformat()})) == []
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert ids(api.get(EVENTS, {"since": tomorrow})) == []
    assert len(ids(api.get(EVENTS, {"since": "2000-01-01T00:00:00Z", "until": tomorrow}))) == len(events)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"since": "yesterday"}, "since", "is not an ISO 8601 date or datetime"),
        ({"until": "2026-02-30"}, "until", "is not an ISO 8601 date or datetime"),
        ({"since": "2026-11-24", "until": "2026-11-23"}, "until", "until must be later than since"),
        ({"run": "abc"}, "run", "A valid integer is required"),
        ({"actor_type": "robot"}, "actor_type", "is not a valid choice"),
    ],
)
def test_bad_filters_are_400_with_a_clear_message(api, params, field, message):
    response = api.get(EVENTS, params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and message in body["errors"][field][0]


def test_cursor_pagination_walks_every_event_once(api):
    made = [audit_record(actor=None, action="tests.api.page", data={"n": n}).id for n in range(7)]
    seen: list[int] = []
    response = api.get(EVENTS, {"page_size": 3, "action": "tests.api.page"})
    pages = 0
    while True:
        seen += ids(response)
        pages += 1
        url = response.json()["next"]
        if url is None:
            break
        assert "cursor=" in url and "action=tests.api.page" in url
        # Events appended while paging neither shift nor repeat what follows.
        audit_record(actor=None, action="tests.api.page", data={"late": pages})
        response = api.get(url)
    assert pages == 3
    assert seen == sorted(made, reverse=True)
    assert response.json()["previous"] is not None


def test_head_is_the_latest_checkpoint_signed_with_the_published_key(api, events):
    pending = audit_record(actor=None, action="tests.api.after_the_checkpoint")
    body = api.get(HEAD).json()
    last = events["login"]
    assert body["sequence"] == last.sequence == len(events) and body["head_hash"] == last.hash
    assert body["algorithm"] == "Ed25519" and body["pending"] == 1 and pending.sequence is None
    sealed_at = dt.datetime.fromisoformat(body["sealed_at"].replace("Z", "+00:00"))
    assert (
        body["signed_message"]
        == f"countersign audit checkpoint v1\n{last.sequence}\n{last.hash}\n{sealed_at.isoformat()}\n"
    )
    # Checked with the public key alone, as a client outside the system would.
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["public_key"]))
    key.verify(base64.b64decode(body["signature"]), body["signed_message"].encode())
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(body["signature"]), body["signed_message"].replace(last.hash, "f" * 64).encode())


def test_head_of_an_empty_log(api):
    body = api.get(HEAD).json()
    assert {name: body[name] for name in ("sequence", "head_hash", "sealed_at", "signature", "pending")} == {
        "sequence": 0,
        "head_hash": "0" * 64,
        "sealed_at": None,
        "signature": None,
        "pending": 0,
    }


def test_the_schema_documents_the_audit_api():
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    listing = paths["/api/v1/audit/events/"]["get"]
    names = {param["name"] for param in listing["parameters"]}
    assert {"action", "action_prefix", "actor", "since", "until", "run", "agent", "cursor"} <= names
    assert "/api/v1/audit/head/" in paths
