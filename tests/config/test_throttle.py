"""Failed sign-ins are limited per client IP and per username, on the page, the admin and the API."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache, caches
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from config.cache import SharedRedisCache
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 4


@pytest.fixture(autouse=True)
def limit(settings):
    settings.SIGNIN_FAILURES_PER_WINDOW = LIMIT


def test_the_default_limit_is_ten_per_minute():
    from config import settings as project_settings

    assert (project_settings.SIGNIN_FAILURES_PER_WINDOW, project_settings.SIGNIN_WINDOW_SECONDS) == (10, 60)


def count(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


def page_sign_in(username: str, password: str, ip: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=ip).post("/accounts/login/", {"username": username, "password": password})


def token_sign_in(username: str, password: str, ip: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=ip).post("/api/v1/auth/token/", {"username": username, "password": password})


def test_the_page_refuses_a_username_after_the_limit_with_one_audit_event(outsider):
    from config.throttle import USERNAME_FACTOR

    for attempt in range(LIMIT * USERNAME_FACTOR):
        # A new IP each time: the per-username limit is what stops a distributed guesser.
        assert page_sign_in("outsider", f"wrong-{attempt}", ip=f"10.0.1.{attempt}").status_code == 200
    assert count("auth.login_failed") == LIMIT * USERNAME_FACTOR

    # Over the limit even the right password is refused, and the password is not checked.
    response = page_sign_in("outsider", PASSWORD, ip="10.0.2.1")
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert int(response["Retry-After"]) > 0
    assert "_auth_user_id" not in response.wsgi_request.session
    for attempt in range(5):
        assert page_sign_in("outsider", f"again-{attempt}", ip="10.0.2.2").status_code == 429

    assert count("auth.login_failed") == LIMIT * USERNAME_FACTOR  # no flood of failed sign-ins
    assert count("auth.login") == 0
    [event] = AuditEvent.objects.filter(action="auth.login.throttled")
    assert event.data["username"] == "outsider" and event.data["scope"] == "username"
    assert event.data["ip"] == "10.0.2.1"


def test_the_page_refuses_an_ip_after_the_limit(outsider):
    for attempt in range(LIMIT):
        page_sign_in(f"guess{attempt}", "wrong-password", ip="10.9.9.9")
    response = page_sign_in("outsider", PASSWORD, ip="10.9.9.9")
    assert response.status_code == 429
    [event] = AuditEvent.objects.filter(action="auth.login.throttled")
    assert event.data["scope"] == "ip"
    # Another client signs in as usual.
    assert page_sign_in("outsider", PASSWORD, ip="10.9.9.10").status_code == 302


def test_guessing_at_a_name_from_elsewhere_does_not_lock_its_owner_out(outsider):
    for attempt in range(LIMIT):
        page_sign_in("outsider", f"wrong-{attempt}", ip="10.8.8.8")
    assert page_sign_in("outsider", PASSWORD, ip="10.8.8.8").status_code == 429
    [event] = AuditEvent.objects.filter(action="auth.login.throttled")
    assert event.data["scope"] in ("ip", "username_ip")
    assert page_sign_in("outsider", PASSWORD, ip="10.8.8.9").status_code == 302


def test_successful_sign_ins_are_not_counted(outsider):
    for _ in range(LIMIT + 2):
        assert page_sign_in("outsider", PASSWORD).status_code == 302


def test_the_limit_ends_with_its_window(outsider, settings):
    settings.SIGNIN_WINDOW_SECONDS = 2
    opened = time.monotonic()
    for attempt in range(LIMIT):
        page_sign_in("outsider", f"wrong-{attempt}")
    assert page_sign_in("outsider", PASSWORD).status_code == 429
    time.sleep(max(0.0, opened + 2.5 - time.monotonic()))
    assert page_sign_in("outsider", PASSWORD).status_code == 302


def test_the_token_endpoint_answers_429_json_and_shares_the_count(outsider):
    for attempt in range(LIMIT // 2):
        page_sign_in("outsider", f"wrong-{attempt}", ip="10.0.3.1")
    for attempt in range(LIMIT - LIMIT // 2):
        assert token_sign_in("outsider", f"wrong-{attempt}", ip="10.0.3.1").status_code == 400
    response = token_sign_in("outsider", PASSWORD, ip="10.0.3.1")
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert "Too many failed sign-in attempts" in body["detail"] and body["retry_after"] > 0
    assert token_sign_in("outsider", PASSWORD, ip="10.0.3.1").status_code == 429
    assert count("auth.login.throttled") == 1
    assert count("auth.login_failed") == LIMIT and count("auth.login") == 0


def test_the_admin_sign_in_is_limited_too(outsider):
    for attempt in range(LIMIT):
        Client(REMOTE_ADDR="10.0.6.1").post("/admin/login/", {"username": "outsider", "password": f"x{attempt}"})
    response = Client(REMOTE_ADDR="10.0.6.1").post("/admin/login/", {"username": "outsider", "password": PASSWORD})
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert count("auth.login_failed") == LIMIT and count("auth.login.throttled") == 1


# --- The key is the client's address as config/clients.py gives it -------------------------
# (Against a real uvicorn process: tests/config/test_trust_live.py.)


def test_a_forwarded_header_from_an_untrusted_peer_does_not_change_the_key(outsider):
    for attempt in range(LIMIT):
        response = Client(REMOTE_ADDR="10.0.7.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}").post(
            "/accounts/login/", {"username": f"guess{attempt}", "password": "wrong-password"}
        )
        assert response.status_code == 200
    spoofed = {"REMOTE_ADDR": "10.0.7.1", "HTTP_X_FORWARDED_FOR": "192.0.2.200"}
    page = Client(**spoofed).post("/accounts/login/", {"username": "outsider", "password": PASSWORD})
    assert page.status_code == 429
    token = APIClient(**spoofed).post("/api/v1/auth/token/", {"username": "outsider", "password": PASSWORD})
    assert token.status_code == 429 and "token" not in token.json()
    [event] = AuditEvent.objects.filter(action="auth.login.throttled")
    assert (event.data["scope"], event.data["ip"]) == ("ip", "10.0.7.1")
    assert set(AuditEvent.objects.filter(action="auth.login_failed").values_list("data__ip", flat=True)) == {"10.0.7.1"}


def test_behind_a_trusted_proxy_the_forwarded_client_is_the_key(outsider, settings):
    settings.TRUSTED_PROXIES = ["10.0.7.1"]

    def via_proxy(client_ip: str) -> dict[str, str]:
        # The client's own claim on the left; the proxy appends the address it saw.
        return {"REMOTE_ADDR": "10.0.7.1", "HTTP_X_FORWARDED_FOR": f"198.51.100.99, {client_ip}"}

    for attempt in range(LIMIT):
        Client(**via_proxy("203.0.113.7")).post("/accounts/login/", {"username": f"guess{attempt}", "password": "x"})
    assert set(AuditEvent.objects.filter(action="auth.login_failed").values_list("data__ip", flat=True)) == {
        "203.0.113.7"
    }
    locked = Client(**via_proxy("203.0.113.7")).post("/accounts/login/", {"username": "outsider", "password": PASSWORD})
    assert locked.status_code == 429
    token = APIClient(**via_proxy("203.0.113.7")).post(
        "/api/v1/auth/token/", {"username": "outsider", "password": PASSWORD}
    )
    assert token.status_code == 429
    # Another client behind the same proxy is not locked out.
    assert (
        Client(**via_proxy("203.0.113.8"))
        .post("/accounts/login/", {"username": "outsider", "password": PASSWORD})
        .status_code
        == 302
    )
    [signed_in] = AuditEvent.objects.filter(action="auth.login")
    assert signed_in.data["ip"] == "203.0.113.8"


def test_the_limits_live_in_redis_shared_by_every_process():
    assert isinstance(caches["default"], SharedRedisCache)
    other_process = caches.create_connection("default")  # its own client, as another process has
    cache.set("tests:shared", 41)
    assert other_process.incr("tests:shared") == 42
    assert cache.get("tests:shared") == 42


def test_cache_clear_leaves_the_broker_alone():
    from config.celery import broker_redis

    client = broker_redis()
    try:
        client.set("runs-tests-broker-key", "queued task")
        cache.set("tests:cached", 1)
        cache.clear()
        assert cache.get("tests:cached") is None
        assert client.get("runs-tests-broker-key") == b"queued task"
    finally:
        client.delete("runs-tests-broker-key")
        client.close()


def test_a_redis_outage_does_not_lock_everyone_out(outsider, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("redis down")

    monkeypatch.setattr(cache, "get", down)
    monkeypatch.setattr(cache, "add", down)
    assert page_sign_in("outsider", "wrong-password").status_code == 200
    assert page_sign_in("outsider", PASSWORD).status_code == 302


def test_a_redis_outage_does_not_turn_token_sign_ins_into_errors(outsider, monkeypatch):
    from django.core.cache import caches

    def down(*args, **kwargs):
        raise ConnectionError("redis down")

    for name in ("get", "add", "set"):
        monkeypatch.setattr(cache, name, down)
        monkeypatch.setattr(caches["default"], name, down)
    assert token_sign_in("outsider", "wrong-password").status_code == 400
    response = token_sign_in("outsider", PASSWORD)
    assert response.status_code == 200 and response.json()["token"]
