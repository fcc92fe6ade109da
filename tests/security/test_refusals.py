"""Refused at the live server, and nothing written: the inbox websocket from another site or
without a session, page POSTs without their CSRF token, a reviewer with ids that are not theirs.

Through the real ASGI server (uvicorn, Channels, the middleware stack as deployed) with real
cookies and headers, as a browser or an attacker's page would send them. Each refusal is set
against the same request done right, so the test shows that the missing part is what refuses
it; and the rows a success would have written (decisions, audit events, runs, grants, the kill
switch) are counted before and after.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

import httpx
import pytest
from guardian.models import UserObjectPermission
from guardian.shortcuts import assign_perm
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agents.definitions import agent_upsert
from agents.demo.data import SUPPORT_AGENT
from agents.models import Agent, Run
from approvals.models import ApprovalRequest, BusinessRule, Decision
from audit.models import AuditEvent
from tests.conftest import PASSWORD, grant_tools
from tests.pages import waiting_refund

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

FOREIGN_ORIGIN = "http://evil.example"
TOKEN_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def rows() -> dict[str, object]:
    """What a refused request must leave as it was."""
    return {
        "approvals": sorted(ApprovalRequest.objects.values_list("pk", "status", "approvals_count")),
        "decisions": Decision.objects.count(),
        "audit events": AuditEvent.objects.count(),
        "runs": sorted(Run.objects.values_list("pk", "status")),
        "agents enabled": sorted(Agent.objects.values_list("slug", "enabled")),
        "rules": BusinessRule.objects.count(),
        "object grants": UserObjectPermission.objects.count(),
    }


@dataclass
class Browser:
    """A signed-in browser: its cookies, and the CSRF token its pages carry."""

    http: httpx.Client
    csrf: str

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())

    def post(self, path: str, data: dict, *, csrf: bool = True, origin: str | None = None) -> httpx.Response:
        base = str(self.http.base_url).rstrip("/")
        headers = {"Origin": origin or base, "Referer": f"{origin or base}/inbox/"}
        if csrf:
            data = {**data, "csrfmiddlewaretoken": self.csrf}
        return self.http.post(path, data=data, headers=headers)


def sign_in(server, username: str) -> Browser:
    http = httpx.Client(base_url=server.url, timeout=10)
    page = http.get("/accounts/login/")
    token = TOKEN_FIELD.search(page.text)
    assert page.status_code == 200 and token, page.text[:300]
    answer = http.post(
        "/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)},
        headers={"Origin": server.url, "Referer": f"{server.url}/accounts/login/"},
    )
    assert answer.status_code == 302 and "sessionid" in http.cookies, answer.text[:300]
    return Browser(http=http, csrf=http.cookies["csrftoken"])


@pytest.fixture
def world(fresh_asgi_server, doorbells, support_agent, starter, assigned_reviewer, other_reviewer):
    """A refund waiting on the support agent, which the reviewer reviews, and one waiting on a
    second agent, which only the other reviewer reviews. ``doorbells`` keeps a live worker of an
    earlier test from advancing these runs while the fixture drives them itself."""
    mine = waiting_refund(support_agent, starter)
    theirs_agent, _ = agent_upsert({**SUPPORT_AGENT, "slug": "support-eu", "name": "Support agent (EU)"})
    grant_tools(starter, theirs_agent.tools)
    assign_perm("review_agent", other_reviewer, theirs_agent)
    theirs = waiting_refund(theirs_agent, starter)
    return {"server": fresh_asgi_server, "mine": mine, "theirs": theirs}


async def handshake(server, *, origin: str | None, cookie: str | None) -> str:
    """The first frame of /ws/inbox/ once connected, or the HTTP status that refused it."""
    headers = {"Cookie": cookie} if cookie else {}
    try:
        async with connect(
            f"{server.ws_url}/ws/inbox/?last_seq=0", origin=origin, additional_headers=headers, open_timeout=10
        ) as socket:
            return str(await asyncio.wait_for(socket.recv(), timeout=10))
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code}"


# --- The inbox websocket ---------------------------------------------------------------------------


def test_the_inbox_websocket_refuses_another_origin_and_a_missing_or_ended_session(world, assigned_reviewer):
    server = world["server"]
    reviewer = sign_in(server, assigned_reviewer.username)
    ended = sign_in(server, assigned_reviewer.username)
    ended_cookie = ended.cookie_header
    assert ended.post("/accounts/logout/", {}).status_code == 302
    before = rows()

    # Done right: the reviewer's session from this site's origin replays the waiting approval.
    first = json.loads(asyncio.run(handshake(server, origin=server.url, cookie=reviewer.cookie_header)))
    assert (first["type"], first["approval"]["id"]) == ("approval.created", world["mine"].pk)

    assert asyncio.run(handshake(server, origin=FOREIGN_ORIGIN, cookie=reviewer.cookie_header)) == "refused 403"
    assert asyncio.run(handshake(server, origin=None, cookie=reviewer.cookie_header)) == "refused 403"
    assert asyncio.run(handshake(server, origin=server.url, cookie=None)) == "refused 403"
    assert asyncio.run(handshake(server, origin=server.url, cookie="sessionid=forged")) == "refused 403"
    assert asyncio.run(handshake(server, origin=server.url, cookie=ended_cookie)) == "refused 403"
    assert rows() == before


# --- Page POSTs without their CSRF token -----------------------------------------------------------


def test_page_posts_without_a_csrf_token_are_refused(world, operator, assigned_reviewer, other_reviewer):
    server, mine = world["server"], world["mine"]
    reviewer = sign_in(server, assigned_reviewer.username)
    console = sign_in(server, operator.username)
    stranger = httpx.Client(base_url=server.url, timeout=10)
    forms = [
        (reviewer, f"/inbox/{mine.pk}/", {"verdict": "approve"}),
        (reviewer, "/inbox/bulk/", {"ids": [mine.pk], "verdict": "approve"}),
        (console, "/console/agents/support/enabled/", {"enabled": "0", "reason": "forged"}),
        (console, "/console/agents/support/level/", {"level": "4", "tool": "", "reason": "forged"}),
        (console, "/console/emergency-stop/", {"reason": "forged", "confirm": "on"}),
        (
            console,
            "/console/rules/new/",
            {"tool": "issue_refund", "field": "amount", "operator": ">", "value": "1", "effect": "block"},
        ),
        (
            console,
            "/console/assignments/",
            {"reviewer": other_reviewer.username, "agent": "support", "granted": "1", "reason": "forged"},
        ),
    ]
    before = rows()
    for browser, path, data in forms:
        # No token: what a form on another site posts with the victim's cookies.
        assert browser.post(path, data, csrf=False).status_code == 403, path
        # The token, but from another site's page: Django's origin check.
        assert browser.post(path, data, origin=FOREIGN_ORIGIN).status_code == 403, path
    # Signing in without a token is refused too (login CSRF), and signs nobody in.
    refused = stranger.post("/accounts/login/", data={"username": assigned_reviewer.username, "password": PASSWORD})
    assert refused.status_code == 403 and "sessionid" not in stranger.cookies
    assert rows() == before

    # Done right, the same form decides.
    assert reviewer.post(f"/inbox/{mine.pk}/", {"verdict": "approve"}).status_code == 302
    mine.refresh_from_db()
    assert mine.status == "approved" and Decision.objects.count() == before["decisions"] + 1


# --- A reviewer and the ids of approvals and runs that are not theirs ------------------------------


def test_a_reviewer_cannot_reach_another_reviewers_approvals_or_runs(world, assigned_reviewer):
    server, mine, theirs = world["server"], world["mine"], world["theirs"]
    token = httpx.post(
        f"{server.url}/api/v1/auth/token/", json={"username": assigned_reviewer.username, "password": PASSWORD}
    ).json()["token"]
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Token {token}"}, timeout=10)
    page = sign_in(server, assigned_reviewer.username)
    missing = max(ApprovalRequest.objects.values_list("pk", flat=True)) + 1000
    missing_run = max(Run.objects.values_list("pk", flat=True)) + 1000

    # Their own are there: the refusals below are about whose ids they are.
    assert api.get(f"/api/v1/approvals/{mine.pk}/").status_code == 200
    assert api.get(f"/api/v1/runs/{mine.run_id}/").status_code == 200
    assert page.http.get(f"/inbox/{mine.pk}/").status_code == 200
    listed = api.get("/api/v1/approvals/", params={"status": "pending"}).json()["results"]
    assert [a["id"] for a in listed] == [mine.pk]
    before = rows()

    for approval_id in (theirs.pk, missing):
        # Someone else's id and an id that does not exist get the same answer: ids are no oracle.
        refusal = api.get(f"/api/v1/approvals/{approval_id}/")
        assert refusal.status_code == 404 and refusal.json()["code"] == "not_found"
        decided = api.post(f"/api/v1/approvals/{approval_id}/decision/", json={"verdict": "approve"})
        assert decided.status_code == 404 and decided.json() == refusal.json()
        assert page.http.get(f"/inbox/{approval_id}/").status_code == 404
        assert page.post(f"/inbox/{approval_id}/", {"verdict": "approve"}).status_code == 404
    bulk = api.post("/api/v1/approvals/decisions/", json={"ids": [theirs.pk, missing], "verdict": "approve"})
    assert bulk.status_code == 200
    assert [(r["id"], r["status"]) for r in bulk.json()["results"]] == [(theirs.pk, 404), (missing, 404)]
    bulk_page = page.post("/inbox/bulk/", {"ids": [theirs.pk], "verdict": "approve"})
    assert bulk_page.status_code == 302
    assert f"#{theirs.pk}: no such approval." in page.http.get(bulk_page.headers["Location"]).text
    for run_id in (theirs.run_id, missing_run):
        refusal = api.get(f"/api/v1/runs/{run_id}/")
        assert refusal.status_code == 404 and refusal.json()["code"] == "not_found"
        assert page.http.get(f"/runs/{run_id}/").status_code == 404
        assert page.http.get(f"/runs/{run_id}/trace.json").status_code == 404
    assert rows() == before
    theirs.refresh_from_db()
    assert theirs.status == "pending"
