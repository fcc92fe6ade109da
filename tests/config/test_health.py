"""/healthz reports each part; /metrics answers loopback or the token (what it says: test_metrics.py)."""

from __future__ import annotations

import socket
import types

import pytest

from config import health

pytestmark = pytest.mark.django_db


def dead_redis_url() -> str:
    # A port nothing listens on: bound, then released.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_all_parts_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok", "channel_layer": "ok", "audit_sealer": "ok"}


def test_unreachable_broker_is_named(client, settings):
    settings.CELERY_BROKER_URL = dead_redis_url()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "error", "channel_layer": "ok"}


def test_unreachable_channel_layer_is_named(client, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": dead_redis_url(), "socket_timeout": None}]},
        }
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "ok", "channel_layer": "error"}


def test_broken_database_is_named(client, monkeypatch):
    def broken() -> None:
        raise ConnectionError("database down")

    monkeypatch.setitem(health.CHECKS, "database", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "error"


# --- Who may scrape /metrics --------------------------------------------------------------


def test_metrics_without_a_token_answer_loopback_clients_only(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "permission_denied" and "METRICS_TOKEN" in response.json()["detail"]


def test_a_forwarded_header_does_not_make_a_remote_client_loopback(client, settings):
    settings.METRICS_TOKEN = ""
    spoofed = client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert spoofed.status_code == 403
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    # Behind a trusted proxy on this host, the client is whom it forwards, not the proxy.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="::1").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token",
        "Token s3cret-metrics-token",
        "Basic czNjcmV0",
        "s3cret-metrics-token",
    ],
)
def test_with_a_token_set_only_the_token_opens_metrics(client, settings, authorization):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)  # from loopback: a token set is needed all the same
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "countersign_runs" not in response.content.decode()


def test_the_right_bearer_token_opens_metrics_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    for scheme in ("Bearer", "bearer"):
        response = client.get(
            "/metrics", REMOTE_ADDR="203.0.113.7", headers={"Authorization": f"{scheme} s3cret-metrics-token"}
        )
        assert response.status_code == 200 and "countersign_runs" in response.content.decode()


def test_the_token_is_compared_in_constant_time(client, settings, monkeypatch):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    compared = []
    real = health.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(health.hmac, "compare_digest", spy)
    assert client.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert compared == [(b"guess", b"s3cret-metrics-token")]


def test_a_database_that_does_not_answer_is_an_error_within_a_second(client, monkeypatch):
    import threading
    import time

    released = threading.Event()

    def hangs(settings_dict) -> None:
        released.wait(10)  # a database that takes the connection and never answers

    monkeypatch.setattr(health, "_probe_database", hangs)
    try:
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started
    finally:
        released.set()
    assert response.status_code == 503 and response.json()["database"] == "error"
    # 1 s for the database; the broker and channel layer answer at once here.
    assert elapsed < 1.8


def test_the_database_probe_uses_its_own_connection(client, monkeypatch):
    from django.db import connection

    seen = []
    probe = health._probe_database
    monkeypatch.setattr(
        health, "_probe_database", lambda settings_dict: seen.append(settings_dict) or probe(settings_dict)
    )
    assert client.get("/healthz").json()["database"] == "ok"
    [settings_dict] = seen
    assert settings_dict["NAME"] == connection.settings_dict["NAME"] and settings_dict["CONN_MAX_AGE"] == 0


def test_probe_settings_bound_the_driver_on_postgresql():
    configured = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "countersign",
        "CONN_MAX_AGE": 600,
        "OPTIONS": {"sslmode": "require", "options": "-c search_path=app"},
    }
    probe = health.probe_settings(configured)
    assert probe["OPTIONS"] == {
        "sslmode": "require",
        "options": "-c search_path=app",  # statement_timeout is SET after connecting (PgBouncer)
        "connect_timeout": 2,
        "tcp_user_timeout": 2000,
    }
    assert probe["CONN_MAX_AGE"] == 0
    assert configured["OPTIONS"] == {"sslmode": "require", "options": "-c search_path=app"}  # untouched


def test_probe_settings_on_sqlite_keep_wal_and_shorten_the_busy_timeout():
    configured = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3", "OPTIONS": {"timeout": 20}}
    probe = health.probe_settings(configured)
    assert probe["OPTIONS"]["timeout"] == 1.0 and configured["OPTIONS"]["timeout"] == 20


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_postgresql_probe_sets_its_statement_timeout_and_answers(monkeypatch):
    from django.db import connection
    from django.db.utils import load_backend

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    probes: list[dict] = []

    def recording_backend(engine: str):
        class Recording(load_backend(engine).DatabaseWrapper):
            def close(self) -> None:
                # What the probe's own session was at the end, read just before it is closed.
                if self.connection is not None:
                    with self.connection.cursor() as cursor:
                        cursor.execute("SELECT pg_backend_pid(), current_setting('statement_timeout')")
                        pid, timeout = cursor.fetchone()
                    probes.append({"pid": pid, "statement_timeout": timeout})
                super().close()

        return types.SimpleNamespace(DatabaseWrapper=Recording)

    monkeypatch.setattr(health, "load_backend", recording_backend)
    health.check_database()  # SET statement_timeout, then SELECT 1, on a connection of its own
    [probe] = probes
    assert probe["statement_timeout"] == "1s"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_setting('statement_timeout')")
        own_pid, own_timeout = cursor.fetchone()
    assert probe["pid"] != own_pid and own_timeout != "1s"  # the app's connection is left alone
