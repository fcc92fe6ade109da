"""The bench's no-op Celery task: the floor of ``decision_to_resume_ms`` (enqueue → start).

The worker of a bench run loads it with ``--include bench.tasks``; it is on no other worker."""

from __future__ import annotations

import time

from celery import shared_task

from config.celery import broker_redis

FLOOR_KEY = "countersign:bench:noop"


@shared_task(name="bench.noop", ignore_result=True)  # type: ignore[untyped-decorator]  # celery ships no types
def noop(sent_at: float) -> None:
    """Pushes (start time − enqueue time) in ms; both from the same machine's wall clock."""
    started = time.time()
    client = broker_redis()
    try:
        client.rpush(FLOOR_KEY, (started - sent_at) * 1000)
    finally:
        client.close()
