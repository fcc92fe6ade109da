"""Many writers at once still leave one unbroken chain."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.db import connection, transaction

from audit.chain import GENESIS_HASH
from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record, audited_atomic
from tests.live import wait_until

# PostgreSQL here allows 100 connections and other suites share the server: at most this
# many threads hold a connection at once; all of them are started and contend together.
MAX_CONNECTIONS = 32


def append_concurrently(threads: int, *, connections_at_once: int) -> float:
    start = threading.Barrier(threads)
    gate = threading.BoundedSemaphore(connections_at_once)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        start.wait()
        with gate:
            try:
                if n % 5 == 0:
                    # Two events in one caller transaction, as services write them.
                    with transaction.atomic():
                        audit_record(actor=None, action="tests.concurrent.pair", data={"n": n, "part": 1})
                        audit_record(actor=None, action="tests.concurrent.pair", data={"n": n, "part": 2})
                else:
                    audit_record(actor=None, action="tests.concurrent.one", data={"n": n})
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
            finally:
                connection.close()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    assert errors == []
    return elapsed


def assert_one_chain(expected: int) -> None:
    # Every event of the table is in the one chain; the test's own are all there.
    rows = list(AuditEvent.objects.order_by("id").values_list("prev_hash", "hash"))
    assert AuditEvent.objects.filter(action__startswith="tests.concurrent.").count() == expected
    previous = GENESIS_HASH
    for prev_hash, hash_ in rows:
        assert prev_hash == previous
        previous = hash_
    report = audit_chain_verify()
    assert report.intact and report.count == len(rows)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not settings.IS_POSTGRES, reason="PostgreSQL only")
def test_200_threads_append_one_unbroken_chain_on_postgres():
    threads = 200
    elapsed = append_concurrently(threads, connections_at_once=MAX_CONNECTIONS)
    events = threads + threads // 5
    assert_one_chain(events)
    print(f"\n{events} events from {threads} threads in {elapsed:.2f} s: {events / elapsed:.0f} appends/s")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(settings.IS_POSTGRES, reason="the SQLite variant")
def test_threads_append_one_unbroken_chain_on_sqlite():
    threads = 20
    elapsed = append_concurrently(threads, connections_at_once=threads)
    events = threads + threads // 5
    assert_one_chain(events)
    print(f"\n{events} events from {threads} threads in {elapsed:.2f} s: {events / elapsed:.0f} appends/s")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not settings.IS_POSTGRES, reason="PostgreSQL only")
def test_audited_transactions_take_the_chain_lock_before_any_row(support_agent):
    """Two audited transactions that touch the same row in opposite orders: one audits, then
    locks the agent row; the other locks that row, inserts a run pointing at it and audits.
    With plain ``atomic()`` they deadlock (each waits for what the other holds); with
    ``audited_atomic()`` the second waits at its start for the chain lock and both commit."""
    from agents.models import Agent, Run

    first_audited = threading.Event()
    second_backend: list[int] = []  # the PostgreSQL backend pid of the second transaction
    second_connected = threading.Event()
    errors: list[BaseException] = []

    def blocked_by_me(pid: int) -> bool:
        # pg_locks (unlike pg_stat_activity) is read afresh inside a transaction.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid() = ANY(pg_blocking_pids(%s))", [pid])
            return cursor.fetchone()[0]

    def audits_then_locks() -> None:
        try:
            if not second_connected.wait(10):
                raise TimeoutError("the second transaction did not connect")
            [pid] = second_backend
            with audited_atomic():
                audit_record(actor=None, action="tests.concurrent.first", target=support_agent)
                first_audited.set()
                # Only once the other transaction waits for a lock this one holds does this one
                # go on to the row: the order in which a deadlock would happen.
                wait_until(lambda: blocked_by_me(pid), timeout=10, what="the second transaction to wait for the first")
                Agent.objects.select_for_update(no_key=True).get(pk=support_agent.pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def locks_then_audits() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                second_backend.append(cursor.fetchone()[0])
            second_connected.set()
            if not first_audited.wait(10):
                raise TimeoutError("the first transaction did not audit")
            with audited_atomic():
                Agent.objects.select_for_update().get(pk=support_agent.pk)
                run = Run.objects.create(agent_id=support_agent.pk)  # foreign key checked at commit
                audit_record(actor=None, action="tests.concurrent.second", target=run)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=audits_then_locks), threading.Thread(target=locks_then_audits)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    actions = AuditEvent.objects.filter(action__startswith="tests.").order_by("id").values_list("action", flat=True)
    assert list(actions) == ["tests.concurrent.first", "tests.concurrent.second"]
    assert audit_chain_verify().intact
    assert audit_chain_verify().intact
