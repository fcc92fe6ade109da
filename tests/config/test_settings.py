"""config/settings.py: the embedded defaults, and bad values that fail with the documented message."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

SETTINGS_FILE = Path(settings.BASE_DIR) / "config" / "settings.py"
ENV_NAMES = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "COUNTERSIGN_VAR_DIR",
    "COUNTERSIGN_FAST_PASSWORD_HASHER",
    "TRUSTED_PROXIES",
    "METRICS_TOKEN",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "EMAIL_HOST",
    "EMAIL_BACKEND",
)


def load_settings(monkeypatch, tmp_path, **env) -> dict:
    """Execute the settings module afresh with exactly these variables."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COUNTERSIGN_VAR_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_embedded_default_is_sqlite_and_a_private_redis_socket(monkeypatch, tmp_path):
    loaded = load_settings(monkeypatch, tmp_path, DEBUG="1")
    database = loaded["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == tmp_path / "countersign.sqlite3"
    assert "journal_mode=WAL" in database["OPTIONS"]["init_command"]
    assert database["OPTIONS"]["timeout"] > 0
    assert loaded["EMBEDDED_REDIS"] is True
    assert loaded["REDIS_URL"] == f"unix://{tmp_path / 'redis.sock'}"
    assert loaded["CELERY_BROKER_URL"] == f"redis+socket://{tmp_path / 'redis.sock'}"
    layer = loaded["CHANNEL_LAYERS"]["default"]
    assert layer["BACKEND"] == "config.channel_layer.PubSubChannelLayer"
    # redis-py 8 / channels-redis: a socket timeout drops idle websockets.
    assert layer["CONFIG"]["hosts"][0]["socket_timeout"] is None


def test_production_urls(monkeypatch, tmp_path):
    loaded = load_settings(
        monkeypatch,
        tmp_path,
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://app:pw@db.internal:5432/countersign",
        REDIS_URL="redis://cache.internal:6379/2",
    )
    database = loaded["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["NAME"], database["CONN_MAX_AGE"]) == ("db.internal", "countersign", 600)
    assert loaded["EMBEDDED_REDIS"] is False
    assert loaded["CELERY_BROKER_URL"] == "redis://cache.internal:6379/2"
    assert loaded["DEBUG"] is False


def test_celery_reliability_settings():
    assert settings.CELERY_TASK_ACKS_LATE is True
    assert settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_TIME_LIMIT > settings.CELERY_TASK_SOFT_TIME_LIMIT > 0


def test_missing_secret_key_with_debug_off(monkeypatch, tmp_path):
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is not set: set the SECRET_KEY environment variable"):
        load_settings(monkeypatch, tmp_path, DEBUG="0")


@pytest.mark.parametrize("url", ["mysql://u:p@localhost/db", "nonsense"])
def test_bad_database_url(monkeypatch, tmp_path, url):
    with pytest.raises(ImproperlyConfigured, match=r"DATABASE_URL has the unsupported scheme .*set DATABASE_URL to"):
        load_settings(monkeypatch, tmp_path, DEBUG="1", DATABASE_URL=url)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REDIS_URL", "http://localhost:6379", "is not a Redis URL: set REDIS_URL"),
        ("DEBUG", "maybe", "is not a boolean: set DEBUG"),
        ("CELERY_TASK_TIME_LIMIT", "soon", "is not an integer: set CELERY_TASK_TIME_LIMIT"),
        ("TRUSTED_PROXIES", "10.0.0.5,proxy.internal", "'proxy.internal', which is not an IP address or network"),
        ("SECURE_HSTS_SECONDS", "a year", "is not an integer: set SECURE_HSTS_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, tmp_path, name, value, message):
    env = {"DEBUG": "1", name: value}
    with pytest.raises(ImproperlyConfigured, match=message):
        load_settings(monkeypatch, tmp_path, **env)


def test_start_up_fails_with_the_message(tmp_path):
    """What a user sees: manage.py stops at start-up and prints the message."""
    env = {key: value for key, value in os.environ.items() if key not in ENV_NAMES}
    env.update(DEBUG="0", COUNTERSIGN_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr

    env.update(DEBUG="1", DATABASE_URL="mysql://u:p@localhost/db")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DATABASE_URL has the unsupported scheme 'mysql'" in result.stderr


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode():
    if connection.vendor != "sqlite":
        pytest.skip("about the embedded SQLite database")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


def test_a_bad_redis_url_is_named_without_its_password(monkeypatch, tmp_path):
    with pytest.raises(ImproperlyConfigured) as error:
        load_settings(monkeypatch, tmp_path, DEBUG="1", REDIS_URL="http://:hunter2-secret@cache.internal:6379/0")
    assert "hunter2-secret" not in str(error.value)
    assert "REDIS_URL='http://:***@cache.internal:6379/0' is not a Redis URL" in str(error.value)


def test_the_cache_is_the_shared_redis(monkeypatch, tmp_path):
    loaded = load_settings(monkeypatch, tmp_path, DEBUG="1")
    cache = loaded["CACHES"]["default"]
    assert cache["BACKEND"] == "config.cache.SharedRedisCache"
    assert cache["LOCATION"] == f"unix://{tmp_path / 'redis.sock'}" and cache["KEY_PREFIX"]
    production = load_settings(
        monkeypatch, tmp_path, SECRET_KEY="x" * 50, REDIS_URL="redis://:pw@cache.internal:6379/2"
    )
    assert production["CACHES"]["default"]["LOCATION"] == "redis://:pw@cache.internal:6379/2"


def test_the_fast_password_hasher_is_for_the_tests_only(monkeypatch, tmp_path):
    from tests.conftest import FAST_PASSWORD_HASHERS

    assert "PASSWORD_HASHERS" not in load_settings(monkeypatch, tmp_path, DEBUG="1")
    fast = load_settings(monkeypatch, tmp_path, DEBUG="1", COUNTERSIGN_FAST_PASSWORD_HASHER="1")
    assert fast["PASSWORD_HASHERS"] == FAST_PASSWORD_HASHERS
    with pytest.raises(ImproperlyConfigured, match="COUNTERSIGN_FAST_PASSWORD_HASHER=1 is for the test suite"):
        load_settings(monkeypatch, tmp_path, SECRET_KEY="x" * 50, COUNTERSIGN_FAST_PASSWORD_HASHER="1")


@pytest.mark.django_db
def test_the_suite_and_its_child_processes_hash_with_md5():
    from tests.conftest import make_user
    from tests.live import live_env

    assert make_user("hashed").password.startswith("md5$")
    assert live_env()["COUNTERSIGN_FAST_PASSWORD_HASHER"] == "1"


def test_no_proxy_is_trusted_by_default(monkeypatch, tmp_path):
    loaded = load_settings(monkeypatch, tmp_path, DEBUG="1")
    assert loaded["TRUSTED_PROXIES"] == []
    assert "SECURE_PROXY_SSL_HEADER" not in loaded  # X-Forwarded-Proto is nobody's to set
    assert loaded["METRICS_TOKEN"] == ""
    assert (loaded["SECURE_SSL_REDIRECT"], loaded["SECURE_HSTS_SECONDS"]) == (False, 0)


def test_trusted_proxies_are_addresses_or_networks_and_their_scheme_counts(monkeypatch, tmp_path):
    loaded = load_settings(monkeypatch, tmp_path, DEBUG="1", TRUSTED_PROXIES=" 10.0.0.5 , 10.1.0.0/16,::1")
    assert loaded["TRUSTED_PROXIES"] == ["10.0.0.5", "10.1.0.0/16", "::1"]
    assert loaded["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")


def test_escalation_mail_goes_over_smtp_when_a_host_is_set(monkeypatch, tmp_path):
    console = load_settings(monkeypatch, tmp_path, DEBUG="1")
    assert console["MAILERS"]["default"]["BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    smtp = load_settings(monkeypatch, tmp_path, DEBUG="1", EMAIL_HOST="smtp.example.com")
    assert smtp["MAILERS"]["default"]["BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert smtp["MAILERS"]["default"]["OPTIONS"]["host"] == "smtp.example.com"
