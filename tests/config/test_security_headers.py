"""The edges every page shares: a Content-Security-Policy without inline script, no caching of
private pages, and a deployment that ``manage.py check --deploy`` finds nothing to say about.
(That the pages still work under the policy, websocket included, is tests/e2e/test_csp.py.)"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from agents.models import Run, RunStatus
from audit.services import audit_record
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.fixture
def private_pages(starter, support_agent, assigned_reviewer) -> list[tuple[Client, str]]:
    """(signed-in client, path) of each page that shows a person's data."""
    run = Run.objects.create(agent=support_agent, started_by=starter, status=RunStatus.SUCCEEDED)
    audit_record(actor=starter, action="tests.headers.event")
    admin = make_user("admin", is_staff=True, is_superuser=True)
    clients = {}
    for user in (starter, assigned_reviewer, admin):
        clients[user.username] = Client()
        clients[user.username].force_login(user)
    return [
        (clients[assigned_reviewer.username], "/inbox/"),
        (clients[starter.username], "/console/"),
        (clients[starter.username], f"/runs/{run.pk}/"),
        (clients[admin.username], "/admin/"),
        (clients[admin.username], "/admin/audit/auditevent/"),
        (clients[admin.username], "/admin/agents/agent/"),
    ]


def test_every_page_has_the_policy(private_pages):
    for client, path in [*private_pages, (Client(), "/accounts/login/"), (Client(), "/healthz")]:
        response = client.get(path)
        assert response.status_code == 200, path
        policy = directives(response)
        assert policy["script-src"] == ["'self'"], path  # no 'unsafe-inline', no nonce, no other host
        assert policy["style-src"] == ["'self'"], path
        assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"], path
        assert policy["frame-ancestors"] == ["'none'"], path
        # Fetches and the inbox websocket, to this host only.
        assert policy["connect-src"] == ["'self'", "ws://testserver"], path


def test_the_websocket_origin_follows_the_scheme_and_host(settings):
    settings.ALLOWED_HOSTS = ["countersign.example.com"]
    secure = Client().get("/accounts/login/", secure=True, HTTP_HOST="countersign.example.com")
    assert directives(secure)["connect-src"] == ["'self'", "wss://countersign.example.com"]


class InlineFinder(HTMLParser):
    """Inline script, inline event handlers, inline styles and javascript: URLs, all of which the policy refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name == "style":
                self.found.append(f"<{tag} style={value!r}>")
            if name in {"href", "src", "action"} and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.found.append("<style> element")
        if tag == "script":
            data_block = (values.get("type") or "").lower() == "application/json"
            self._in_script = "src" not in values and not data_block

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"inline <script>: {data.strip()[:80]!r}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def inline_code(html: str) -> list[str]:
    finder = InlineFinder()
    finder.feed(html)
    return finder.found


def test_no_page_carries_inline_script_or_style(private_pages):
    for client, path in [*private_pages, (Client(), "/accounts/login/")]:
        html = client.get(path).content.decode()
        assert inline_code(html) == [], path


def test_no_template_carries_inline_script_or_style():
    roots = [Path(settings.BASE_DIR) / "templates"] + [
        Path(settings.BASE_DIR) / app / "templates" for app in ("agents", "approvals", "audit", "config")
    ]
    templates = [path for root in roots if root.exists() for path in root.rglob("*.html")]
    assert templates
    for path in templates:
        # Template tags are not HTML: the finder reads what is left of the markup.
        source = re.sub(r"{%.*?%}|{{.*?}}", "", path.read_text())
        assert inline_code(source) == [], path


def test_the_finder_finds_what_the_policy_refuses():
    html = '<div style="x"></div><a href="javascript:go()">x</a><button onclick="go()">x</button><script>go()</script>'
    assert len(inline_code(html)) == 4
    assert inline_code('<script type="application/json" id="s">{"a": 1}</script><script src="/s.js"></script>') == []


def test_private_pages_are_never_stored(private_pages):
    for client, path in private_pages:
        cache_control = {part.strip() for part in client.get(path)["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= cache_control, path
    assert {"private", "no-store"} <= {p.strip() for p in Client().get("/accounts/login/")["Cache-Control"].split(",")}


def test_public_files_keep_their_caching():
    response = Client().get("/static/app.css")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


# --- manage.py check --deploy ----------------------------------------------------------------


def readme_production_env() -> dict[str, str]:
    """The variables of the README's production example, its placeholders filled in."""
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    block = re.search(r"make `manage\.py check --deploy`\s+clean.*?```sh\n(.*?)```", readme, re.S)
    assert block, "the README's production example for check --deploy is missing"
    env = dict(re.findall(r"\b([A-Z][A-Z0-9_]+)=(\S+)", block.group(1)))
    return {name: _filled(value) for name, value in env.items()}


def _filled(value: str) -> str:
    if value == "<base64":  # "<base64 of 32 random bytes>": an Ed25519 key
        return base64.b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(50) if value.startswith("<") else value


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    documented = readme_production_env()
    for name in (
        "DEBUG",
        "SECRET_KEY",
        "SECURE_COOKIES",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "TRUSTED_PROXIES",
    ):
        assert name in documented, name
    assert documented["DEBUG"] == "0"
    env = {key: value for key, value in os.environ.items() if key not in {"DEBUG", "COUNTERSIGN_FAST_PASSWORD_HASHER"}}
    env.update(documented, COUNTERSIGN_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output
    assert "WARNINGS" not in output and "ERRORS" not in output


def test_check_deploy_names_what_is_missing_without_them(tmp_path):
    """The test above is not vacuous: the development defaults draw the warnings it rules out."""
    env = {key: value for key, value in os.environ.items() if key not in {"COUNTERSIGN_FAST_PASSWORD_HASHER"}}
    env.update(DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), COUNTERSIGN_VAR_DIR=str(tmp_path))
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_COOKIES", "EMAIL_HOST", "EMAIL_BACKEND"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in output, output
