"""The sweeper rings again what a failed doorbell left behind, at its next period.

The broker is really down in these tests (tests/outage.py): nobody listens at its address, it
hangs, or a private redis-server is stopped and started again. A start answers 201 with what
the database holds, the run is marked not rung (``enqueued_at`` NULL), and the next sweep rings
it, where a doorbell merely late counts as lost only after RUN_REQUEUE_AFTER_SECONDS.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from agents import runtime
from agents.definitions import agent_upsert
from agents.demo.data import RESEARCH_AGENT
from agents.models import Run, RunStatus
from agents.runtime.lifecycle import run_mark_not_rung
from agents.tasks import sweep
from config import doorbell
from tests.agents.test_tasks import finished
from tests.conftest import grant_tools
from tests.outage import broker_hanging, broker_refusing

QUESTION = {"input": {"question": "refund policy"}}


@pytest.fixture
def research(db, starter):
    agent, _ = agent_upsert(RESEARCH_AGENT)
    grant_tools(starter, ["kb_search"])
    return agent


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_start_while_the_broker_refuses_answers_201_and_the_next_sweep_runs_it(
    celery_worker, research, starter, caplog
):
    client = client_for(starter)
    with broker_refusing(), caplog.at_level(logging.WARNING, logger="config.doorbell"):
        started = time.monotonic()
        response = client.post(f"/api/v1/agents/{research.slug}/runs/", QUESTION, format="json")
        elapsed = time.monotonic() - started
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == RunStatus.QUEUED
    assert elapsed < 1.5  # refused at once: no waiting on a broker that is not there
    assert "could not enqueue agents.tasks.advance_run" in caplog.text
    [run] = Run.objects.all()  # what the answer says is what the database holds
    assert run.pk == body["id"] and run.status == RunStatus.QUEUED
    assert run.enqueued_at is None  # marked: not rung
    # Beat's next sweep (what it runs every SWEEP_INTERVAL_SECONDS), with the broker back.
    counts = sweep()
    assert counts["requeued"] == 1
    assert finished(run) == RunStatus.SUCCEEDED
    assert Run.objects.count() == 1
    assert sweep()["requeued"] == 0  # rung now: nothing to ring again


@pytest.mark.django_db(transaction=True)
def test_a_start_while_the_broker_hangs_answers_within_seconds(research, starter):
    with broker_hanging():
        started = time.monotonic()
        response = client_for(starter).post(f"/api/v1/agents/{research.slug}/runs/", QUESTION, format="json")
        elapsed = time.monotonic() - started
    assert response.status_code == 201, response.content
    # Two tries of BROKER_TIMEOUT_SECONDS each (one retry), then the answer.
    assert elapsed < 2 * settings.BROKER_TIMEOUT_SECONDS + 2
    [run] = Run.objects.all()
    assert run.pk == response.json()["id"] and run.enqueued_at is None


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_dies_and_comes_back(private_broker, research, starter):
    client = client_for(starter)
    url = f"/api/v1/agents/{research.slug}/runs/"
    first = client.post(url, QUESTION, format="json").json()["id"]
    assert private_broker.queued("runs") == [(doorbell.ADVANCE_RUN, [first])]
    private_broker.stop()
    response = client.post(url, QUESTION, format="json")
    assert response.status_code == 201
    second = response.json()["id"]
    assert Run.objects.get(pk=second).enqueued_at is None
    assert Run.objects.get(pk=first).enqueued_at is not None
    private_broker.start()  # empty: a restarted Redis without persistence lost its queue
    counts = runtime.runs_recover()
    # The one marked is rung at once; the first, whose message was lost with the server, only
    # after RUN_REQUEUE_AFTER_SECONDS (nothing in the database tells it from one a worker is on).
    assert counts["requeued"] == 1
    assert private_broker.queued("runs") == [(doorbell.ADVANCE_RUN, [second])]
    later = timezone.now() + timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS + 1)
    assert runtime.runs_recover(now=later)["requeued"] == 2
    assert sorted(args[0] for _, args in private_broker.queued("runs")) == [first, second, second]


@pytest.mark.django_db
def test_a_queued_run_not_rung_is_rung_at_once_and_a_rung_one_only_when_late(
    research, starter, doorbells, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        rung = runtime.run_create(agent=research, user=starter, payload=QUESTION["input"])
        not_rung = runtime.run_create(agent=research, user=starter, payload=QUESTION["input"])
    Run.objects.filter(pk=not_rung.pk).update(enqueued_at=None)
    doorbells.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert runtime.runs_recover()["requeued"] == 1
    assert doorbells == [("advance", not_rung.pk)]
    assert Run.objects.get(pk=not_rung.pk).enqueued_at is not None
    later = timezone.now() + timedelta(seconds=settings.RUN_REQUEUE_AFTER_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert runtime.runs_recover(now=later)["requeued"] == 2
    assert sorted(doorbells[1:]) == sorted([("advance", rung.pk), ("advance", not_rung.pk)])


@pytest.mark.django_db
def test_a_refused_doorbell_marks_only_a_run_still_queued(research, starter, django_capture_on_commit_callbacks):
    with broker_refusing(), django_capture_on_commit_callbacks(execute=True):
        run = runtime.run_create(agent=research, user=starter, payload=QUESTION["input"])
    assert Run.objects.get(pk=run.pk).enqueued_at is None
    # A run that left the queue before the doorbell failed needs none: it is not marked.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED, enqueued_at=timezone.now())
    with broker_refusing():
        assert doorbell.send(doorbell.ADVANCE_RUN, run.pk, on_failure=lambda: run_mark_not_rung(run.pk)) is False
    assert Run.objects.get(pk=run.pk).enqueued_at is not None
