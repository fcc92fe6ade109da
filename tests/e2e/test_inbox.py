"""The reviewer inbox in headless Chromium against a real ASGI server and a real Celery worker.

Both stacks: the embedded one (SQLite, private Redis) and, with DATABASE_URL and REDIS_URL,
PostgreSQL and Redis. Screenshots land in tests/e2e/artifacts/.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from guardian.shortcuts import assign_perm

from agents import runtime
from agents.models import Agent, LedgerEntry, Run, RunStatus, Ticket
from approvals.models import ApprovalRequest, ApprovalStatus, Decision
from tests.conftest import grant_tools, make_user
from tests.live import ARTIFACTS, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

# Chromium logs a failed websocket handshake as a console error; the offline test causes those.
EXPECTED_CONSOLE = ("WebSocket connection to", "Failed to load resource")


@dataclass
class Team:
    agent: Agent
    starter: User
    alice: User
    carol: User
    bob: User


@pytest.fixture
def team(transactional_db) -> Team:
    from agents.definitions import agent_upsert
    from agents.demo.data import SUPPORT_AGENT, rules_seed
    from agents.models import KnowledgeArticle

    KnowledgeArticle.objects.create(title="Refund policy", body="Refunds within 30 days.")
    Ticket.objects.create(subject="Broken kettle", customer_email="jane@example.com")
    rules_seed()
    agent, _ = agent_upsert(SUPPORT_AGENT)
    starter = make_user("starter", "operators")
    grant_tools(starter, agent.tools)
    alice = make_user("alice", "reviewers")
    carol = make_user("carol", "reviewers")
    bob = make_user("bob", "reviewers")  # a reviewer, but not of this agent
    for user in (alice, carol):
        assign_perm("review_agent", user, agent)
    return Team(agent=agent, starter=starter, alice=alice, carol=carol, bob=bob)


def start_refund(team: Team, amount: float = 120) -> Run:
    ticket = Ticket.objects.first()
    payload = {"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": amount, "currency": "USD"}
    return runtime.run_create(agent=team.agent, user=team.starter, payload=payload)


def session_cookie(user: User, url: str) -> dict[str, Any]:
    client = Client()
    client.force_login(user)
    return {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": url}


class Pages:
    """Browser contexts signed in as given users; console errors are collected and checked."""

    def __init__(self, browser: Any, server: Any, name: str) -> None:
        self.name = name
        self.browser = browser
        self.server = server
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.allowed = EXPECTED_CONSOLE

    def open(self, user: User, path: str = "/inbox/") -> Any:
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        context.add_cookies([session_cookie(user, self.server.url)])
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{user.username}: {exc}"))
        page.on(
            "console",
            lambda msg: (
                msg.type == "error"
                and not msg.text.startswith(self.allowed)
                and self.errors.append(f"{user.username}: {msg.text}")
            ),
        )
        page.goto(self.server.url + path)
        return page

    def close(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for number, context in enumerate(self.contexts):
            with contextlib.suppress(Exception):
                # The last state of every page, for a person to look at (and to debug a failure).
                context.pages[0].screenshot(path=str(ARTIFACTS / f"{self.name}-{number}.png"), full_page=True)
            with contextlib.suppress(Exception):
                context.close()


@pytest.fixture
def server(asgi_server) -> Any:
    """The ASGI server, restarted: the flush after a transactional test recreates content types
    with new ids, and a long-lived server keeps the old ones cached (guardian looks object
    permissions up by content type), so it would find no reviewable agents."""
    asgi_server.restart()
    return asgi_server


@pytest.fixture
def pages(browser, server, request) -> Iterator[Pages]:
    opened = Pages(browser, server, f"last-{request.node.name}")
    yield opened
    opened.close()
    assert not opened.errors, opened.errors


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_live(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.locator("body[data-live=open]")).to_be_attached()


def watch_arrivals(page: Any) -> None:
    """Record when each inbox row enters the page (browser clock, ms since the epoch)."""
    page.evaluate(
        """() => {
        window.__arrivals = {};
        window.__notReloaded = true;
        new MutationObserver((records) => {
          for (const record of records) for (const node of record.addedNodes) {
            if (node.matches && node.matches("tr.inbox-row")) window.__arrivals[node.dataset.id] = Date.now();
          }
        }).observe(document.getElementById("inbox-rows"), { childList: true });
    }"""
    )


def row(page: Any, approval_id: int) -> Any:
    return page.locator(f'#inbox-rows tr.inbox-row[data-id="{approval_id}"]')


def wait_approval(run: Run, tool: str, *, status: str = ApprovalStatus.PENDING, timeout: float = 20) -> ApprovalRequest:
    return wait_until(
        lambda: ApprovalRequest.objects.filter(run=run, tool=tool, status=status).first(),
        timeout=timeout,
        what=f"a {status} {tool} approval",
    )


def run_status(run: Run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


def test_item_appears_live_and_the_edited_amount_is_executed(pages, team, celery_worker):
    from playwright.sync_api import expect

    inbox = pages.open(team.alice)
    wait_live(inbox)
    watch_arrivals(inbox)
    expect(inbox.locator(".keys-line")).to_be_visible()
    inbox.keyboard.press("?")
    expect(inbox.locator("#keys-help")).to_be_visible()
    inbox.keyboard.press("?")
    expect(inbox.locator("#keys-help")).to_be_hidden()
    shot(inbox, "inbox-empty")

    started = time.time()
    run = start_refund(team, amount=120)
    approval = wait_approval(run, "issue_refund")
    item = row(inbox, approval.pk)
    expect(item).to_be_visible(timeout=5_000)
    arrived_ms = inbox.evaluate(f"() => window.__arrivals['{approval.pk}']")
    checkpoint_to_visible = arrived_ms / 1000 - approval.created_at.timestamp()
    start_to_visible = arrived_ms / 1000 - started
    print(
        f"\ncheckpoint → row visible: {checkpoint_to_visible * 1000:.0f} ms; run start → row: {start_to_visible:.2f} s"
    )
    assert checkpoint_to_visible < 2.0
    assert inbox.evaluate("() => window.__notReloaded") is True
    expect(item).to_contain_text("issue_refund")
    expect(item.locator("[data-field=risk]")).to_have_text("financial")
    expect(inbox).to_have_title("(1) Inbox · Countersign")
    shot(inbox, "inbox")

    # Open it with the keyboard, edit the amount, look at the diff, confirm.
    inbox.keyboard.press("k")
    inbox.keyboard.press("e")
    inbox.wait_for_url(f"**/inbox/{approval.pk}/#edit")
    expect(inbox.get_by_label("Ticket Id")).to_be_focused()  # the edit form's first field
    inbox.get_by_label("Amount").fill("85.5")
    inbox.get_by_role("button", name="Review changes").click()
    diff = inbox.locator("#edit-diff")
    expect(diff).to_be_visible()
    expect(diff.locator("tr.changed")).to_have_count(1)
    expect(diff.locator("tr.changed")).to_contain_text("120")
    expect(diff.locator("tr.changed td.new")).to_have_text("85.5")
    shot(inbox, "detail")
    inbox.get_by_role("button", name="Confirm edit and approve").click()
    expect(inbox.locator(".messages")).to_contain_text("Approve with edits")
    assert urlsplit(inbox.url).path == "/inbox/"

    # The run goes on: the email and the ticket update wait too; approve them with the keyboard.
    wait_live(inbox)
    for tool in ("send_email", "update_ticket"):
        next_item = wait_approval(run, tool)
        expect(row(inbox, next_item.pk)).to_be_visible()
        inbox.keyboard.press("k")
        expect(row(inbox, next_item.pk)).to_have_class("inbox-row current")
        inbox.keyboard.press("a")
        expect(row(inbox, next_item.pk)).to_have_count(0)
    wait_until(lambda: run_status(run) == RunStatus.SUCCEEDED, timeout=20, what="the run to succeed")
    assert LedgerEntry.objects.get().amount == pytest.approx(85.5)

    trace = pages.open(team.alice, f"/runs/{run.pk}/")
    expect(trace.locator("#run-status")).to_have_text("succeeded")
    refund_output = trace.locator("li.step.kind-observation", has_text="issue_refund succeeded")
    expect(refund_output).to_contain_text('"amount": "85.5')
    decision = trace.locator("li.step.kind-decision", has_text="issue_refund approved by alice")
    expect(decision).to_contain_text("Approved arguments (edited)")
    expect(decision).to_contain_text('"amount": 85.5')
    shot(trace, "trace")


def marker_approval(agent: Agent, starter: User) -> int:
    """A pending approval of another agent, committed: its event is pushed on commit. Made on a
    thread of its own: the push is refused in this one, where Playwright runs an event loop."""
    from agents.models import ToolCall
    from agents.tools import arguments_hash
    from approvals.notify import inbox_event_publish

    def commit() -> int:
        arguments = {"amount": 1, "currency": "USD"}
        try:
            with transaction.atomic():
                run = Run.objects.create(agent=agent, started_by=starter, status=RunStatus.WAITING)
                call = ToolCall.objects.create(
                    run=run,
                    step=1,
                    tool="issue_refund",
                    arguments=arguments,
                    arguments_hash=arguments_hash(arguments),
                    status="awaiting",
                )
                approval = ApprovalRequest.objects.create(
                    run=run,
                    agent=agent,
                    tool_call=call,
                    tool="issue_refund",
                    arguments=arguments,
                    arguments_hash=call.arguments_hash,
                    risk_class="financial",
                    policy_reason="level 2",
                )
                inbox_event_publish(approval=approval, type="approval.created")
            return approval.pk
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(commit).result(timeout=30)


def test_reviewer_without_permission_never_sees_the_item(pages, team, celery_worker):
    from playwright.sync_api import expect

    # Bob reviews another agent: an item of that one, pushed after alice has hers, is the marker.
    marker_agent = Agent.objects.create(slug="marker", name="Marker", objective="o", scope="s", tools=["issue_refund"])
    assign_perm("review_agent", team.bob, marker_agent)
    alice = pages.open(team.alice)
    bob = pages.open(team.bob)
    wait_live(alice)
    wait_live(bob)
    run = start_refund(team)
    approval = wait_approval(run, "issue_refund")
    expect(row(alice, approval.pk)).to_be_visible()
    # Alice has hers, so a wrongly routed copy is already in bob's channel, ahead of the
    # marker (a channel delivers in order): once bob shows the marker, it would have arrived.
    marker = marker_approval(marker_agent, team.starter)
    expect(row(bob, marker)).to_be_visible()
    expect(bob.locator("#inbox-rows tr.inbox-row")).to_have_count(1)
    assert bob.evaluate("() => document.body.dataset.wsEvents") == "1"  # the marker's, nothing else
    bob.reload()
    expect(row(bob, marker)).to_be_visible()
    expect(bob.locator("#inbox-rows tr.inbox-row")).to_have_count(1)
    response = bob.goto(f"{pages.server.url}/inbox/{approval.pk}/")
    assert response.status == 404
    response = bob.goto(f"{pages.server.url}/runs/{run.pk}/")
    assert response.status == 404


def test_two_reviewers_on_one_item(pages, team, celery_worker):
    from playwright.sync_api import expect

    run = start_refund(team)
    approval = wait_approval(run, "issue_refund")
    carol_list = pages.open(team.carol)
    carol_detail = pages.open(team.carol, f"/inbox/{approval.pk}/")
    alice = pages.open(team.alice, f"/inbox/{approval.pk}/")
    for page in (carol_list, carol_detail, alice):
        wait_live(page)
    expect(row(carol_list, approval.pk)).to_be_visible()

    alice.get_by_role("button", name="Approve", exact=True).click()
    expect(alice.locator(".messages")).to_contain_text("Approve: #")

    expect(row(carol_list, approval.pk)).to_have_count(0)
    expect(carol_list.locator("#notices")).to_contain_text("approved by alice")
    banner = carol_detail.locator("#decided-banner")
    expect(banner).to_contain_text("Already decided: approved by alice")

    # Carol's late click: refused, said so, her reason kept, nothing changed.
    carol_detail.get_by_label("Reason for rejecting (required)").fill("too generous")
    carol_detail.get_by_role("button", name="Reject").click()
    expect(carol_detail.locator("#decision-error")).to_have_text("Already decided: approved by alice.")
    expect(carol_detail.locator(".kept textarea")).to_have_value("too generous")
    shot(carol_detail, "detail-already-decided")
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED and approval.decided_by == team.alice
    assert list(Decision.objects.filter(request=approval).values_list("reviewer__username", flat=True)) == ["alice"]


def test_reconnect_after_a_server_restart_shows_every_missed_item_once(pages, team, celery_worker, server):
    from playwright.sync_api import expect

    pages.allowed = EXPECTED_CONSOLE
    inbox = pages.open(team.alice)
    wait_live(inbox)
    first = wait_approval(start_refund(team, amount=10), "issue_refund")
    expect(row(inbox, first.pk)).to_be_visible()

    server.stop()
    expect(inbox.locator("#offline-banner")).to_be_visible()
    shot(inbox, "inbox-offline")
    missed = [wait_approval(start_refund(team, amount=20 + n), "issue_refund") for n in range(3)]
    server.start()

    expect(inbox.locator("#offline-banner")).to_be_hidden(timeout=20_000)
    wait_live(inbox)
    for approval in missed:
        expect(row(inbox, approval.pk)).to_have_count(1)
    expect(inbox.locator("#inbox-rows tr.inbox-row")).to_have_count(4)
    expect(inbox).to_have_title("(4) Inbox · Countersign")

    # Live again: one more arrives once, and a decision elsewhere removes its row.
    after = wait_approval(start_refund(team, amount=30), "issue_refund")
    expect(row(inbox, after.pk)).to_have_count(1)
    expect(inbox.locator("#inbox-rows tr.inbox-row")).to_have_count(5)
    ids = inbox.evaluate("() => Array.from(document.querySelectorAll('#inbox-rows tr.inbox-row'), r => r.dataset.id)")
    assert len(ids) == len(set(ids)) == 5
    shot(inbox, "inbox-after-reconnect")


def test_a_signed_out_page_says_so_instead_of_retrying_forever(pages, team, server):
    from playwright.sync_api import expect

    inbox = pages.open(team.alice)
    wait_live(inbox)
    inbox.context.clear_cookies()
    server.restart()  # drops the websocket; the session cookie is gone, so the handshake is refused
    banner = inbox.locator("#offline-banner")
    expect(banner).to_contain_text("You are signed out.", timeout=20_000)
    expect(banner.get_by_role("link", name="Sign in again")).to_have_attribute(
        "href", "/accounts/login/?next=%2Finbox%2F"
    )


def test_keyboard_selection_and_bulk_reject_keep_the_form_on_errors(pages, team, celery_worker):
    from playwright.sync_api import expect

    team.agent.on_reject = Agent.OnReject.STOP  # a rejected run ends: no new items to follow
    team.agent.save()
    runs = [start_refund(team, amount=amount) for amount in (11, 12, 13)]
    # The worker runs them side by side: the inbox order is the order the approvals were made.
    approvals = sorted((wait_approval(run, "issue_refund") for run in runs), key=lambda a: (a.created_at, a.pk))
    inbox = pages.open(team.alice)
    wait_live(inbox)
    for approval in approvals:
        expect(row(inbox, approval.pk)).to_be_visible()
    newest, middle, oldest = approvals[2], approvals[1], approvals[0]

    # Newest first: x picks the current row, j moves down, x picks the next one.
    inbox.keyboard.press("x")
    inbox.keyboard.press("j")
    expect(row(inbox, middle.pk)).to_have_class("inbox-row current")
    inbox.keyboard.press("x")
    expect(inbox.locator("#selected-count")).to_have_text("2")

    # A bulk rejection without a reason is refused on the page; the selection is kept.
    inbox.get_by_role("button", name="Reject selected").click()
    expect(inbox.locator("#bulk-form .errors")).to_contain_text("A rejection needs a reason.")
    assert ApprovalRequest.objects.filter(pk__in=[newest.pk, middle.pk], status="pending").count() == 2
    expect(row(inbox, newest.pk).locator("[data-field=pick]")).to_be_checked()
    expect(row(inbox, middle.pk).locator("[data-field=pick]")).to_be_checked()
    expect(row(inbox, oldest.pk).locator("[data-field=pick]")).not_to_be_checked()

    inbox.locator("#bulk-form input[name=comment]").fill("duplicate requests")
    inbox.get_by_role("button", name="Reject selected").click()
    expect(inbox.locator(".messages")).to_contain_text("Reject: 2 items.")
    assert urlsplit(inbox.url).path == "/inbox/"
    for approval in (newest, middle):
        approval.refresh_from_db()
        assert approval.status == ApprovalStatus.REJECTED and approval.resolution_comment == "duplicate requests"
    shot(inbox, "inbox-after-bulk")

    # r opens the remaining item's rejection form; a reason is required there too.
    wait_live(inbox)
    expect(row(inbox, oldest.pk)).to_have_class("inbox-row current")
    inbox.keyboard.press("r")
    inbox.wait_for_url(f"**/inbox/{oldest.pk}/#reject")
    reason = inbox.locator("#negative-comment")
    expect(reason).to_be_focused()
    reason.fill("customer withdrew the request")
    inbox.locator("#negative-form button[type=submit]").click()
    expect(inbox.locator(".messages")).to_contain_text("Reject")
    oldest.refresh_from_db()
    assert oldest.status == ApprovalStatus.REJECTED
    assert not LedgerEntry.objects.exists()
