from __future__ import annotations

import json
import os
import socket
from typing import Any

import redis
from celery import Celery, signals

from config import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("countersign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Run traces: a provider per worker process, made after the fork (its export thread would not
# survive one), flushed when the process stops. A pool without child processes sets up once.
@signals.worker_process_init.connect  # type: ignore[untyped-decorator]  # celery ships no types
def _tracing_in_child(**_: object) -> None:
    telemetry.tracing_setup()


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _tracing_in_worker(sender: Any = None, **_: object) -> None:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    pool = get_implementation(sender.pool_cls) if sender is not None else TaskPool
    if not (isinstance(pool, type) and issubclass(pool, TaskPool)):
        telemetry.tracing_setup()


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _tracing_flush(**_: object) -> None:
    telemetry.tracing_shutdown()


def broker_redis(*, timeout: float | None = 1.0) -> redis.Redis:
    """A redis-py client for the broker's Redis (kombu spells a unix socket redis+socket://)."""
    from django.conf import settings

    url = str(settings.CELERY_BROKER_URL).replace("redis+socket://", "unix://", 1)
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


@app.task(name="config.ping", ignore_result=True)  # type: ignore[untyped-decorator]  # celery ships no types
def ping(key: str) -> None:
    """Diagnostic: proves a worker took a task off the broker by setting ``key`` on its Redis."""
    client = broker_redis()
    try:
        client.set(key, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), ex=300)
    finally:
        client.close()
