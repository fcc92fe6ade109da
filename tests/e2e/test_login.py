"""Headless Chromium signs in as a demo user through a real ASGI server and sees their name."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from agents.management.commands.seed_demo import demo_password

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo_users():
    call_command("seed_demo", force=True, verbosity=0)


def sign_in(page, server, username: str, password: str) -> None:
    page.goto(f"{server.url}/accounts/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_demo_reviewer_signs_in_and_sees_their_name(page, asgi_server, demo_users):
    from playwright.sync_api import expect

    sign_in(page, asgi_server, "reviewer1", demo_password())
    expect(page.locator("header")).to_contain_text("reviewer1")
    assert "/accounts/login/" not in page.url


def test_wrong_password_stays_on_the_login_page(page, asgi_server, demo_users):
    from playwright.sync_api import expect

    sign_in(page, asgi_server, "reviewer1", "not-the-password")
    expect(page.get_by_role("alert")).to_be_visible()
    assert "/accounts/login/" in page.url
    expect(page.locator("header")).not_to_contain_text("reviewer1")
