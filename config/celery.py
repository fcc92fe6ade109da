from __future__ import annotations

import json
import os
import socket

import redis
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("countersign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
