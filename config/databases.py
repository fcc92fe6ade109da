"""The database settings from DATABASE_URL: PostgreSQL (persistent connections in workers and
commands, a bounded pool in the ASGI server) or SQLite. Read by config/settings.py; imports no
app code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_int

SQLITE_OPTIONS = {
    # WAL lets the web server read while the worker writes; IMMEDIATE transactions take
    # the write lock up front so two writers queue on the busy timeout instead of failing.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}


def database_from_env(var_dir: Path) -> dict[str, Any]:
    """DATABASES["default"] from DATABASE_URL; unset, the embedded SQLite file under ``var_dir``."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        var_dir.mkdir(parents=True, exist_ok=True)
        path = var_dir / "countersign.sqlite3"
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": SQLITE_OPTIONS,
            "TEST": {"NAME": var_dir / "test.sqlite3"},
        }
    scheme = urlparse(url).scheme
    if scheme in {"postgres", "postgresql", "pgsql"}:
        if os.environ.get("COUNTERSIGN_SERVER") == "asgi":
            return postgres_pooled(url)
        # Workers and commands: one thread per process, so one persistent connection each.
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True))
        config["ENGINE"] = "django.db.backends.postgresql"
        return config
    if scheme == "sqlite":
        config = dict(dj_database_url.parse(url))
        config["OPTIONS"] = SQLITE_OPTIONS
        return config
    raise ImproperlyConfigured(
        f"DATABASE_URL has the unsupported scheme {scheme!r}: set DATABASE_URL to "
        "postgres://user:password@host:5432/name (or sqlite:////absolute/path.sqlite3), "
        "or unset it for the embedded SQLite default."
    )


def postgres_pooled(url: str) -> dict[str, Any]:
    """The ASGI server's database: a bounded pool (psycopg_pool) instead of persistent connections.

    Under ASGI each request's sync code runs in a thread of its own, and a persistent connection
    stays with the thread it was opened in: the server's connections grew with its requests
    until PostgreSQL refused new clients (tests/faults/test_connections.py). A pooled connection
    goes back to the pool when the request ends; a request finding all of them busy waits up to
    DATABASE_POOL_TIMEOUT_SECONDS, and each connection is checked before it is lent (a restarted
    PostgreSQL closes them all)."""
    from psycopg_pool import ConnectionPool

    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
    config["ENGINE"] = "django.db.backends.postgresql"
    config.setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN_SIZE", 2, minimum=1),
        "max_size": env_int("DATABASE_POOL_MAX_SIZE", 10, minimum=1),
        "timeout": env_int("DATABASE_POOL_TIMEOUT_SECONDS", 10, minimum=1),
        "check": ConnectionPool.check_connection,
    }
    return config
