"""Many writers at once, none waiting for another, still leave one unbroken chain once sealed."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.db import connection, transaction

from audit.chain import GENESIS_HASH
from audit.models import AuditEvent
from audit.sealer import seal_pending
from audit.selectors import audit_chain_verify
from audit.services import audit_record, audited_atomic

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
    # Every event of the table is sealed once into the one chain, in id order; the test's own are all there.
    seal_pending()
    assert not AuditEvent.objects.filter(sequence__isnull=True).exists()
    rows = list(AuditEvent.objects.order_by("id").values_list("prev_hash", "hash"))
    assert list(AuditEvent.objects.order_by("id").values_list("sequence", flat=True)) == list(range(1, len(rows) + 1))
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
def test_an_open_audited_transaction_does_not_hold_up_another():
    """With the chain lock gone, a second audited transaction commits while the first is still
    open after writing its event; the sealer then chains both in id order."""
    first_written = threading.Event()
    second_done = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with audited_atomic():
                audit_record(actor=None, action="tests.concurrent.first")
                first_written.set()
                if not second_done.wait(10):
                    raise TimeoutError("the second transaction waited for the first")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def second() -> None:
        try:
            if not first_written.wait(10):
                raise TimeoutError("the first transaction did not write")
            with audited_atomic():
                audit_record(actor=None, action="tests.concurrent.second")
            second_done.set()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    seal_pending()
    actions = AuditEvent.objects.filter(action__startswith="tests.").order_by("sequence")
    assert list(actions.values_list("action", flat=True)) == ["tests.concurrent.first", "tests.concurrent.second"]
    assert audit_chain_verify().intact
