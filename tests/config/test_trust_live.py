"""Through a real uvicorn process, started as ``manage.py serve`` starts it: X-Forwarded-For picks
neither the sign-in limits' key nor a loopback address for /metrics, unless it comes from a proxy
named in TRUSTED_PROXIES, and then the address it forwards is the client."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from audit.models import AuditEvent
from config.embedded import uvicorn_command
from tests.conftest import PASSWORD, make_user
from tests.live import AsgiServer

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def _proxied_asgi(django_db_setup, embedded_redis) -> Iterator[AsgiServer]:
    server = AsgiServer(env={"TRUSTED_PROXIES": "127.0.0.1"})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxied_server(_proxied_asgi: AsgiServer, transactional_db) -> AsgiServer:
    """The same server with TRUSTED_PROXIES=127.0.0.1: the test is the proxy."""
    _proxied_asgi.ensure_started()
    return _proxied_asgi


@pytest.fixture
def outsider(transactional_db):
    return make_user("outsider")


def page_sign_in(server: AsgiServer, username: str, password: str, *, forwarded_for: str) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        form = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text[:500]
        data = {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
        return client.post("/accounts/login/", data=data)


def token_sign_in(server: AsgiServer, username: str, password: str, *, forwarded_for: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/auth/token/",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": forwarded_for},
        timeout=10,
    )


def failed_ips() -> set[str]:
    return {event.data["ip"] for event in AuditEvent.objects.filter(action="auth.login_failed")}


def test_the_server_runs_without_proxy_headers():
    assert "--no-proxy-headers" in uvicorn_command(host="127.0.0.1", port=8000)
    assert "--no-proxy-headers" in AsgiServer().command()
    procfile = (settings.BASE_DIR / "Procfile").read_text()
    [web] = [line for line in procfile.splitlines() if line.startswith("web:")]
    assert "--no-proxy-headers" in web
    readme = (settings.BASE_DIR / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("uvicorn ")]
    assert commands and all("--no-proxy-headers" in line for line in commands)


def test_failures_from_one_peer_lock_it_out_whatever_x_forwarded_for_says(asgi_server, outsider):
    limit = settings.SIGNIN_FAILURES_PER_WINDOW
    for attempt in range(limit):
        response = page_sign_in(asgi_server, "outsider", f"wrong-{attempt}", forwarded_for=f"192.0.2.{attempt + 1}")
        assert response.status_code == 200, attempt
    assert failed_ips() == {"127.0.0.1"}  # the socket peer, not what the header claimed

    fresh = "198.51.100.77"
    page = page_sign_in(asgi_server, "outsider", PASSWORD, forwarded_for=fresh)
    assert page.status_code == 429 and "sessionid" not in page.cookies
    token = token_sign_in(asgi_server, "outsider", PASSWORD, forwarded_for=fresh)
    assert token.status_code == 429 and "token" not in token.json()
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_the_token_endpoint_counts_against_the_page_and_the_other_way_round(asgi_server, outsider):
    limit = settings.SIGNIN_FAILURES_PER_WINDOW
    for attempt in range(limit):
        assert (
            token_sign_in(asgi_server, "outsider", "wrong", forwarded_for=f"192.0.2.{attempt + 1}").status_code == 400
        )
    assert page_sign_in(asgi_server, "outsider", PASSWORD, forwarded_for="198.51.100.1").status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_key(proxied_server, outsider):
    limit = settings.SIGNIN_FAILURES_PER_WINDOW
    for attempt in range(limit):
        # The client's own claim on the left changes each time; the proxy's entry on the right does not.
        forwarded = f"192.0.2.{attempt + 1}, 203.0.113.7"
        assert page_sign_in(proxied_server, "outsider", f"wrong-{attempt}", forwarded_for=forwarded).status_code == 200
    assert failed_ips() == {"203.0.113.7"}

    assert page_sign_in(proxied_server, "outsider", PASSWORD, forwarded_for="203.0.113.7").status_code == 429
    assert token_sign_in(proxied_server, "outsider", PASSWORD, forwarded_for="203.0.113.7").status_code == 429
    # Another client behind the same proxy signs in.
    signed_in = page_sign_in(proxied_server, "outsider", PASSWORD, forwarded_for="203.0.113.8")
    assert signed_in.status_code == 302
    token = token_sign_in(proxied_server, "outsider", PASSWORD, forwarded_for="203.0.113.9")
    assert token.status_code == 200 and token.json()["token"]
    assert {event.data["ip"] for event in AuditEvent.objects.filter(action="auth.login")} == {
        "203.0.113.8",
        "203.0.113.9",
    }


def test_metrics_are_for_loopback_clients_and_a_header_does_not_make_one(asgi_server, proxied_server):
    # No token set: the socket peer is loopback and X-Forwarded-For is nobody's to set.
    direct = httpx.get(f"{asgi_server.url}/metrics", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10)
    assert direct.status_code == 200 and "countersign_runs" in direct.text
    # Behind a trusted proxy the forwarded client is remote: refused, whatever its own claim says.
    forwarded = httpx.get(
        f"{proxied_server.url}/metrics", headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}, timeout=10
    )
    assert forwarded.status_code == 403 and forwarded.json()["code"] == "permission_denied"
    assert httpx.get(f"{proxied_server.url}/metrics", timeout=10).status_code == 200  # the proxy host itself
