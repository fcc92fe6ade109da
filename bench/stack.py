"""The stack a bench run measures: its environment, a fresh database, Redis and the real processes.

``embedded``: the default of ``make run`` (SQLite file and a private redis-server on a unix
socket under the bench's var dir). ``real``: PostgreSQL and Redis from DATABASE_URL and
REDIS_URL, or a bench database on 127.0.0.1. Each stack runs in a process of its own, since the
Django settings are read once per process. The worker and the ASGI server are started the way
the test suite starts them (tests/live.py on config/embedded.py's spawn).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from tests.live import AsgiServer, CeleryWorker

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/countersign_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
STACKS = ("embedded", "real")


def stack_env(stack: str, *, base: dict[str, str], var_dir: Path) -> dict[str, str]:
    """The environment of the process that measures ``stack`` (and of the processes it starts)."""
    env = dict(base)
    env.update(
        DEBUG=env.get("DEBUG", "1"),
        DJANGO_SETTINGS_MODULE="config.settings",
        COUNTERSIGN_VAR_DIR=str(var_dir / stack),
        COUNTERSIGN_BENCH="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("METRICS_TOKEN", None)  # /metrics answers the loopback bench without a token
    if stack == "embedded":
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
    else:
        env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
        env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    return env


def database_recreate() -> None:
    """A fresh, empty database before Django connects: a bench measures known data only."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        path = Path(os.environ["COUNTERSIGN_VAR_DIR"]) / "countersign.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def django_setup() -> None:
    import django
    from django.core.management import call_command

    database_recreate()
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


@contextmanager
def redis_running() -> Iterator[None]:
    """The embedded stack's private redis-server for the run; the real stack's database flushed."""
    from django.conf import settings

    from config.celery import broker_redis
    from config.embedded import EmbeddedRedis

    if settings.EMBEDDED_REDIS:
        server = EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)
        server.start()
        try:
            yield
        finally:
            server.stop()
        return
    client = broker_redis(timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()
    yield


def worker() -> CeleryWorker:
    """A real ``celery worker -c 2`` (prefork: two worker processes) that also knows the bench's
    no-op task (``--include bench.tasks``), for the floor of the resume measure."""
    from tests.live import CeleryWorker

    class BenchWorker(CeleryWorker):
        def command(self) -> list[str]:
            return [*super().command(), "--include", "bench.tasks"]

    return BenchWorker()


def asgi_server() -> AsgiServer:
    from tests.live import AsgiServer

    return AsgiServer()
