"""Idempotency-Key on POST /api/v1/agents/{slug}/runs/ (agents.idempotency)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone
from rest_framework.test import APIClient

from agents import idempotency
from agents.definitions import agent_upsert
from agents.demo.data import RESEARCH_AGENT
from agents.models import Agent, IdempotencyKey, Run
from agents.tasks import sweep
from tests.agents.test_tasks import wait_for
from tests.conftest import grant_tools, make_user

pytestmark = pytest.mark.django_db

BODY = {"input": {"question": "refund policy"}}


@pytest.fixture
def research(db, starter) -> Agent:
    agent, _ = agent_upsert(RESEARCH_AGENT)
    grant_tools(starter, ["kb_search"])
    return agent


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def start(client, agent, key=None, body=BODY):
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(f"/api/v1/agents/{agent.slug}/runs/", body, format="json", headers=headers)


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer(
    research, starter, doorbells, django_capture_on_commit_callbacks
):
    client = client_for(starter)
    with django_capture_on_commit_callbacks(execute=True):
        first = start(client, research, "order-4711")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    with django_capture_on_commit_callbacks(execute=True):
        again = start(client, research, "order-4711")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content  # the first answer, byte for byte
    assert again.json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1
    assert doorbells == [("advance", first.json()["id"])]  # and rung once


def test_the_fingerprint_is_of_the_agent_and_the_parsed_body(research, support_agent):
    def fingerprint(agent, body):
        return idempotency.request_fingerprint(agent=agent, body=body)

    same = {"input": {"a": 1, "b": [1, 2]}}
    assert fingerprint(research, same) == fingerprint(research, {"input": {"b": [1, 2], "a": 1}})
    assert fingerprint(research, same) != fingerprint(research, {"input": {"a": 1, "b": [2, 1]}})
    assert fingerprint(research, same) != fingerprint(support_agent, same)


def test_the_same_key_with_another_body_or_agent_is_422(research, support_agent, starter, doorbells):
    client = client_for(starter)
    assert start(client, research, "k1").status_code == 201
    other_body = start(client, research, "k1", body={"input": {"question": "shipping times"}})
    assert other_body.status_code == 422
    assert other_body.json()["code"] == "idempotency_key_reused"
    other_agent = start(client, support_agent, "k1", body=BODY)
    assert other_agent.status_code == 422 and other_agent.json()["code"] == "idempotency_key_reused"
    assert Run.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1


def test_keys_are_scoped_per_user(research, starter, doorbells):
    colleague = make_user("colleague", "operators")
    grant_tools(colleague, ["kb_search"])
    mine = start(client_for(starter), research, "shared-key")
    theirs = start(client_for(colleague), research, "shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert Run.objects.count() == 2


@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_an_empty_or_too_long_key_is_400(research, starter, doorbells, key):
    response = start(client_for(starter), research, key)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_idempotency_key" and "Idempotency-Key" in body["errors"]
    assert Run.objects.count() == 0 and IdempotencyKey.objects.count() == 0


def test_a_key_of_255_characters_is_taken(research, starter, doorbells):
    assert start(client_for(starter), research, "k" * 255).status_code == 201
    assert IdempotencyKey.objects.get().key == "k" * 255


def test_a_retry_while_the_first_is_in_flight_is_409(research, starter, doorbells):
    # The first request claimed the key (its own transaction, committed) and has not answered.
    fingerprint = idempotency.request_fingerprint(agent=research, body=BODY)
    IdempotencyKey.objects.create(user=starter, key="busy", fingerprint=fingerprint)
    response = start(client_for(starter), research, "busy")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_in_flight"
    assert Run.objects.count() == 0


def test_a_claim_whose_request_died_is_taken_over(research, starter, doorbells):
    fingerprint = idempotency.request_fingerprint(agent=research, body=BODY)
    long_ago = timezone.now() - timedelta(seconds=idempotency.LOCK_SECONDS + 1)
    IdempotencyKey.objects.create(user=starter, key="crashed", fingerprint=fingerprint, created_at=long_ago)
    client = client_for(starter)
    first = start(client, research, "crashed")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert start(client, research, "crashed").json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1 and IdempotencyKey.objects.count() == 1


def test_a_refused_start_frees_its_key(research, starter, operator, doorbells):
    client = client_for(starter)
    # Refused by the run's own checks (after the key was claimed): nothing is kept.
    bad = start(client, research, "retry-me", body={"input": {"question": ""}})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_input"
    assert IdempotencyKey.objects.count() == 0
    Agent.objects.filter(pk=research.pk).update(enabled=False)
    disabled = start(client, research, "retry-me")
    assert disabled.status_code == 409 and disabled.json()["code"] == "agent_disabled"
    assert IdempotencyKey.objects.count() == 0 and Run.objects.count() == 0
    Agent.objects.filter(pk=research.pk).update(enabled=True)
    retried = start(client, research, "retry-me")
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert Run.objects.count() == 1


def test_keys_last_24_hours_and_the_sweeper_purges_them(research, starter, doorbells):
    client = client_for(starter)
    first = start(client, research, "daily")
    assert first.status_code == 201
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    # Older than a day: a new request, a new run (even before the sweeper has purged the key).
    again = start(client, research, "daily")
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    assert Run.objects.count() == 2
    start(client, research, "fresh")
    IdempotencyKey.objects.filter(key="daily").update(created_at=timezone.now() - timedelta(hours=25))
    assert sweep()["idempotency_keys_purged"] == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]


def test_without_a_key_every_start_is_a_run(research, starter, doorbells):
    client = client_for(starter)
    assert start(client, research).json()["id"] != start(client, research).json()["id"]
    assert Run.objects.count() == 2 and IdempotencyKey.objects.count() == 0


def test_the_schema_documents_the_header_and_its_answers():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/agents/{slug}/runs/"]["post"]
    [header] = [p for p in operation["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and not header.get("required", False)
    assert {"201", "400", "409", "422"} <= set(operation["responses"])
    assert "Idempotency-Key" in operation["responses"]["422"]["description"]
    assert "in flight" in operation["responses"]["409"]["description"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_on_postgresql_one_run_and_409_while_in_flight(research, starter, doorbells):
    """Two requests with one key at once: the second, while the first is in flight, gets 409;
    a retry after the first answered gets its answer. The barrier is a real row lock: the test
    holds the agent's row, which the first request's run transaction must lock (the kill
    switch's lock), so the first has claimed its key and waits there."""
    answers: dict[str, object] = {}

    def first_request() -> None:
        try:
            answers["first"] = start(client_for(starter), research, "concurrent")
        finally:
            connections.close_all()

    holder = connections.create_connection("default")
    try:
        holder.set_autocommit(False)
        with holder.cursor() as cursor:
            cursor.execute("SELECT id FROM agents_agent WHERE id = %s FOR UPDATE", [research.pk])
        thread = threading.Thread(target=first_request)
        thread.start()
        wait_for(
            lambda: IdempotencyKey.objects.filter(key="concurrent", response_status=None).exists(),
            timeout=10,
            message="the first request to claim its key",
        )
        second = start(client_for(starter), research, "concurrent")
        assert second.status_code == 409 and second.json()["code"] == "idempotency_key_in_flight"
        assert Run.objects.count() == 0  # the first is still waiting on the agent's row
    finally:
        holder.rollback()
        holder.close()
    thread.join(timeout=30)
    first = answers["first"]
    assert first.status_code == 201, first.content
    third = start(client_for(starter), research, "concurrent")
    assert third.status_code == 201 and third.headers["Idempotent-Replayed"] == "true"
    assert third.content == first.content
    assert Run.objects.count() == 1
    connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_many_concurrent_retries_on_postgresql_make_one_run(research, starter, doorbells):
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def request() -> None:
        try:
            barrier.wait(timeout=10)
            response = start(client_for(starter), research, "storm")
            statuses.append(response.status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(statuses) == 8 and set(statuses) <= {201, 409} and 201 in statuses
    assert Run.objects.count() == 1
    assert IdempotencyKey.objects.get(key="storm").response_status == 201
    connection.close()
