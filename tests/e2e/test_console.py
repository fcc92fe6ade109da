"""The operator console in headless Chromium: a level change takes effect on the next run."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from agents.models import Agent, Run, RunStatus
from approvals.models import ApprovalKind, ApprovalRequest
from audit.models import AuditEvent
from tests.e2e import test_inbox as inbox_tests
from tests.e2e.test_inbox import row, shot, start_refund, wait_live
from tests.live import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

# The browser pages, the restarted server and the users of the inbox tests.
pages = inbox_tests.pages
server = inbox_tests.server
team = inbox_tests.team


def test_level_two_to_three_makes_the_next_run_a_level_three_review(pages, team, celery_worker):
    from playwright.sync_api import expect

    console = pages.open(team.starter, "/console/")  # the starter is an operator
    agent_row = console.locator(f"#agent-{team.agent.slug}")
    expect(agent_row.locator("[data-field=level]")).to_have_text("2 · prepare-and-propose")
    shot(console, "console")

    # A level change asks for a reason: the browser refuses to submit without one.
    agent_row.locator(".level-form select[name=level]").select_option("3")
    agent_row.get_by_role("button", name="Change level").click()
    assert Agent.objects.get(pk=team.agent.pk).autonomy_level == 2
    agent_row.locator(".level-form input[name=reason]").fill("the refunds have been right for a month")
    agent_row.get_by_role("button", name="Change level").click()
    expect(console.locator(".messages")).to_contain_text("Autonomy level of Support agent set to 3.")
    expect(console.locator(f"#agent-{team.agent.slug} [data-field=level]")).to_have_text("3 · execute-with-review")
    event = AuditEvent.objects.filter(action="agents.agent.level_changed").latest("id")
    assert event.data["old"] == 2 and event.data["new"] == 3 and event.data["reason"].startswith("the refunds")
    shot(console, "console-after-level-change")

    inbox = pages.open(team.alice)
    wait_live(inbox)
    run = start_refund(team, amount=120)
    seen: set[str] = set()

    def finished() -> bool:
        status = Run.objects.values_list("status", flat=True).get(pk=run.pk)
        seen.add(status)
        return status == RunStatus.SUCCEEDED

    wait_until(finished, timeout=30, interval=0.01, what="the level-3 run to succeed")
    assert RunStatus.WAITING not in seen
    approvals = ApprovalRequest.objects.filter(run=run)
    assert not approvals.exclude(kind=ApprovalKind.REVIEW).exists()
    refund = approvals.get(tool="issue_refund")

    item = row(inbox, refund.pk)
    expect(item).to_be_visible()
    expect(item.locator("[data-field=kind]")).to_have_text("review (level 3)")
    expect(item.locator("[data-field=quick]")).to_have_text("OK")
    expect(inbox.locator("#inbox-rows tr.inbox-row")).to_have_count(approvals.count())
    shot(inbox, "inbox-level-3-reviews")
    item.locator("[data-field=quick]").click()
    expect(item).to_have_count(0)
    wait_until(lambda: ApprovalRequest.objects.get(pk=refund.pk).status == "reviewed_ok", timeout=5, what="the review")

    trace = pages.open(team.alice, f"/runs/{run.pk}/")
    expect(trace.locator("#run-status")).to_have_text("succeeded")
    expect(trace.locator("li.step.kind-tool_call", has_text="issue_refund")).to_contain_text("execute_and_review")
    expect(trace.locator("#run-approvals")).to_contain_text("reviewed_ok by alice")


def test_trace_updates_live_while_the_run_goes(pages, team, celery_worker):
    from playwright.sync_api import expect

    from approvals.decisions import approval_request_decide

    run = start_refund(team, amount=120)
    refund = wait_until(
        lambda: ApprovalRequest.objects.filter(run=run, tool="issue_refund").first(), timeout=20, what="approval"
    )
    trace = pages.open(team.alice, f"/runs/{run.pk}/")
    expect(trace.locator("#run-status")).to_have_text("waiting")
    expect(trace.locator("#run-live")).to_be_visible()
    steps_before = trace.locator("#timeline li.step").count()
    decided = time.monotonic()

    # In a thread of its own: Playwright's event loop runs in this one, and the decision's push
    # after commit needs a thread without a running loop (as in the web server).
    def approve() -> None:
        try:
            approval_request_decide(approval=refund, reviewer=team.alice, verdict="approve")
        finally:
            connection.close()

    decide = threading.Thread(target=approve)
    decide.start()
    decide.join()
    expect(trace.locator("li.step.kind-decision", has_text="issue_refund approved by alice")).to_be_visible()
    expect(trace.locator("li.step.kind-observation", has_text="issue_refund succeeded")).to_be_visible()
    print(f"\ndecision → trace shows the executed refund: {time.monotonic() - decided:.2f} s (polling every 1.5 s)")
    assert trace.locator("#timeline li.step").count() > steps_before
    expect(trace.locator("#run-approvals")).to_contain_text("approve at")
    shot(trace, "trace-live")


def test_kill_switch_and_emergency_stop_in_the_console(pages, team):
    from playwright.sync_api import expect

    console = pages.open(team.starter, "/console/")
    agent_row = console.locator(f"#agent-{team.agent.slug}")
    agent_row.locator(".enabled-form input[name=reason]").fill("it emailed the wrong customer")
    agent_row.get_by_role("button", name="Pull kill switch").click()
    expect(console.locator(".messages")).to_contain_text("disabled (kill switch)")
    expect(console.locator(f"#agent-{team.agent.slug} [data-field=enabled]")).to_have_text("off (kill switch)")
    console.locator(f"#agent-{team.agent.slug} .enabled-form input[name=reason]").fill("fixed")
    console.get_by_role("button", name="Enable again").click()
    expect(console.locator(f"#agent-{team.agent.slug} [data-field=enabled]")).to_have_text("on")

    stop = console.locator("form.emergency-stop")
    stop.locator("input[name=reason]").fill("incident 42")
    stop.get_by_label("Disable every agent now").check()
    stop.get_by_role("button", name="Emergency stop").click()
    expect(console.locator(".messages")).to_contain_text("Emergency stop: 1 agent disabled.")
    assert not Agent.objects.filter(enabled=True).exists()
