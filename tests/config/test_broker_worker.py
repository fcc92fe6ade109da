"""A task enqueued through the real broker runs in a real worker process (both stacks)."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from config.celery import broker_redis, ping

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def ping_roundtrip(timeout: float = 30.0) -> dict:
    key = f"countersign:test:{uuid.uuid4().hex}"
    ping.delay(key)
    client = broker_redis()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = client.get(key)
            if raw:
                return json.loads(raw)
            time.sleep(0.01)
    finally:
        client.close()
    raise AssertionError(f"config.ping did not run within {timeout} s")


def pool_parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_task_runs_in_the_worker_process(celery_worker):
    result = ping_roundtrip()
    assert result["pid"] != os.getpid()
    # Prefork: the task ran in a pool process of the worker the fixture started.
    assert pool_parent(result["pid"]) == celery_worker.proc.pid


def test_worker_survives_a_kill_and_restart(celery_worker):
    first = celery_worker.proc.pid
    celery_worker.kill()
    assert celery_worker.proc.poll() is not None
    celery_worker.restart()
    assert celery_worker.proc.pid != first
    assert pool_parent(ping_roundtrip()["pid"]) == celery_worker.proc.pid


def test_queues_are_routed_and_drained_sweeps_then_resumes_first(settings):
    assert settings.CELERY_WORKER_QUEUES == "seals,sweeps,resumes,runs,default"
    assert settings.CELERY_TASK_ROUTES["audit.tasks.seal"] == {"queue": "seals"}
    assert settings.CELERY_TASK_ROUTES["agents.tasks.resume_run"] == {"queue": "resumes"}
    assert settings.CELERY_TASK_ROUTES["agents.tasks.advance_run"] == {"queue": "runs"}
    assert settings.CELERY_TASK_ROUTES["agents.tasks.sweep"] == {"queue": "sweeps"}
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["queue_order_strategy"] == "priority"
