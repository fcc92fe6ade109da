"""The pages work in headless Chromium under the Content-Security-Policy, websocket included, and
the policy is enforced: an inline script injected into a page does not run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from agents.models import Run, RunStatus
from audit.sealer import seal_pending
from audit.services import audit_record
from tests.conftest import PASSWORD
from tests.e2e import test_inbox as inbox_tests
from tests.e2e.test_inbox import Team, wait_live
from tests.live import AsgiServer

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

server = inbox_tests.server
team = inbox_tests.team

SELF_ONLY = "default-src 'self'; connect-src {connect_src}; script-src 'self'; style-src 'self'"

# Runs before any script of the page; records what the policy blocked.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.effectiveDirective} ${event.blockedURI}`);
});
"""


class Browser:
    def __init__(self, browser: Any, server: AsgiServer) -> None:
        self.browser = browser
        self.server = server
        self.contexts: list[Any] = []
        self.console_errors: list[str] = []

    def sign_in(self, user: User, *, next_path: str) -> Any:
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        context.add_init_script(RECORD_VIOLATIONS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self.on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))
        # Through the sign-in page itself: its form, its redirect.
        page.goto(f"{self.server.url}/accounts/login/?next={next_path}")
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**{next_path}")
        return page

    def on_console(self, message: Any) -> None:
        # Chromium asks for /favicon.ico, which the app does not serve.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.console_errors.append(message.text)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def chromium(browser, server) -> Iterator[Browser]:
    opened = Browser(browser, server)
    yield opened
    opened.close()


def violations(page: Any) -> list[str]:
    return page.evaluate("() => window.__violations")


def test_every_page_works_under_the_policy(chromium: Browser, team: Team):
    from playwright.sync_api import expect

    run = Run.objects.create(agent=team.agent, started_by=team.starter, status=RunStatus.SUCCEEDED, result={"ok": 1})
    audit_record(actor=team.starter, action="tests.csp.event")
    User.objects.filter(pk=team.starter.pk).update(is_staff=True, is_superuser=True)

    inbox = chromium.sign_in(team.alice, next_path="/inbox/")
    policy = inbox.evaluate("async () => (await fetch(location.href)).headers.get('content-security-policy')")
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    wait_live(inbox)  # the websocket opened under connect-src
    inbox.keyboard.press("?")  # a handler from a static module, not an inline one
    expect(inbox.locator("#keys-help")).to_be_visible()
    assert violations(inbox) == []

    console = chromium.sign_in(team.starter, next_path="/console/")
    expect(console.locator(f"#agent-{team.agent.slug}")).to_be_visible()
    trace = console.context.new_page()
    trace.goto(f"{chromium.server.url}/runs/{run.pk}/")
    expect(trace.locator("#run-status")).to_have_text("succeeded")
    seal_pending()  # as the running sealer does within a second
    admin = console.context.new_page()
    admin.goto(f"{chromium.server.url}/admin/audit/auditevent/")
    expect(admin.locator(".audit-head")).to_contain_text("Latest checkpoint")
    # The audit page's own style sheet applies (it used to be an inline style attribute).
    assert admin.locator(".audit-head").evaluate("node => getComputedStyle(node).marginBottom") == "12px"
    for page in (console, trace, admin):
        assert violations(page) == [], page.url

    assert chromium.console_errors == []


def test_an_injected_inline_script_does_not_run(chromium: Browser, team: Team):
    inbox = chromium.sign_in(team.alice, next_path="/inbox/")
    ran = inbox.evaluate(
        """() => {
        const script = document.createElement("script");
        script.textContent = "window.__inlineRan = true";
        document.body.append(script);
        const button = document.createElement("button");
        button.setAttribute("onclick", "window.__handlerRan = true");
        document.body.append(button);
        button.click();
        return [window.__inlineRan === true, window.__handlerRan === true];
    }"""
    )
    assert ran == [False, False]
    inbox.wait_for_function("() => window.__violations.length >= 2")
    assert all(v.startswith("script-src") for v in violations(inbox)), violations(inbox)


@pytest.mark.parametrize(("connect_src", "opens"), [("'self'", True), ("'none'", False)])
def test_self_alone_covers_the_websocket_in_chromium(browser, server, team: Team, connect_src, opens):
    """The policy also names ws://host for browsers that need it; Chromium's 'self' covers it already.
    The inbox is served with connect-src cut to 'self' (and, as a control, to 'none', which blocks
    the socket). A page that Playwright fulfils has no address, so Chromium's local network checks
    would refuse its loopback websocket whatever the policy: this browser runs without them."""
    from tests.live import CHROMIUM, CHROMIUM_ARGS

    other = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"]
    )
    try:
        chromium = Browser(other, server)
        inbox = chromium.sign_in(team.alice, next_path="/inbox/")

        def cut_policy(route: Any) -> None:
            response = route.fetch()
            headers = {**response.headers, "content-security-policy": SELF_ONLY.format(connect_src=connect_src)}
            route.fulfill(response=response, headers=headers)

        inbox.route("**/inbox/", cut_policy)
        inbox.reload()
        if opens:
            wait_live(inbox)
            assert violations(inbox) == [] and chromium.console_errors == []
        else:
            inbox.wait_for_function("() => window.__violations.length > 0")
            assert all(v.startswith("connect-src ws://") for v in violations(inbox)), violations(inbox)
            assert inbox.locator("body").get_attribute("data-live") != "open"
        chromium.close()
    finally:
        other.close()
