"""The sealer: every committed event sealed once, in id order, past no writer that holds a lower id;
signed checkpoints; the backlog on /healthz and /metrics."""

from __future__ import annotations

import base64
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import connection, transaction
from django.test import Client

from audit.models import AuditCheckpoint, AuditEvent
from audit.sealer import seal_pending
from audit.selectors import audit_chain_verify
from audit.services import audit_record, audited_atomic
from audit.signing import checkpoint_signature_ok, public_key_bytes
from tests.live import wait_until

needs_postgres = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.IS_POSTGRES, reason="PostgreSQL only"),
]


def places() -> list[tuple[int, int | None]]:
    return list(AuditEvent.objects.order_by("id").values_list("id", "sequence"))


class OpenWriter:
    """A writer on its own connection that appends an event and keeps its transaction open until told."""

    def __init__(self, action: str) -> None:
        self.action, self.written, self.finish = action, threading.Event(), threading.Event()
        self.commit = True
        self.event_id: int | None = None
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        try:
            with audited_atomic():
                self.event_id = audit_record(actor=None, action=self.action).id
                self.written.set()
                if not self.finish.wait(30):
                    raise TimeoutError("never told to finish")
                if not self.commit:
                    transaction.set_rollback(True)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> OpenWriter:
        self.thread.start()
        assert self.written.wait(10)
        return self

    def end(self, *, commit: bool) -> None:
        self.commit = commit
        self.finish.set()
        self.thread.join(10)
        assert self.errors == []

    def __exit__(self, *exc: object) -> None:
        self.finish.set()
        self.thread.join(10)


def postgres(test):
    for mark in reversed(needs_postgres):
        test = mark(test)
    return test


@postgres
def test_eight_writers_with_a_sealer_at_work_are_sealed_once_without_gap_or_fork():
    writers, per_writer = 8, 60
    start = threading.Barrier(writers + 1)
    done = threading.Event()
    errors: list[BaseException] = []
    passes: list[int] = []

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                with audited_atomic():
                    audit_record(actor=None, action="tests.sealer.write", data={"writer": n, "i": i})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def seal() -> None:
        # The sealer runs while the writers write, as in production.
        try:
            start.wait()
            while not done.is_set():
                passes.append(seal_pending(wait=0.5))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    sealer = threading.Thread(target=seal)
    for thread in [*threads, sealer]:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    sealer.join(30)
    assert errors == []
    seal_pending()
    rows = places()
    assert len(rows) == writers * per_writer
    # Each sealed once, numbered 1..n without a gap, in id order.
    assert [sequence for _, sequence in rows] == list(range(1, len(rows) + 1))
    assert sum(passes) > 0 and AuditCheckpoint.objects.count() >= 2
    report = audit_chain_verify()
    assert report.intact and report.count == len(rows) and report.checkpoints == AuditCheckpoint.objects.count()


@postgres
def test_the_sealer_does_not_seal_past_an_open_writer_and_seals_it_once_it_commits():
    with OpenWriter("tests.sealer.early") as early:
        later = audit_record(actor=None, action="tests.sealer.later")  # committed, a higher id
        assert later.id > early.event_id
        assert seal_pending(wait=0.2) == 0
        assert places() == [(later.id, None)]  # the open one is not visible; the later one waits
        early.end(commit=True)
    assert seal_pending() == 2
    assert places() == [(early.event_id, 1), (later.id, 2)]


@postgres
def test_an_aborted_writer_leaves_a_hole_that_blocks_nothing():
    with OpenWriter("tests.sealer.aborted") as aborted:
        later = audit_record(actor=None, action="tests.sealer.later")
        assert seal_pending(wait=0.2) == 0
        aborted.end(commit=False)
    assert seal_pending() == 1
    assert places() == [(later.id, 1)]
    assert audit_chain_verify().intact


@postgres
def test_a_writer_open_longer_than_the_lag_bound_is_passed_and_sealed_after(settings):
    settings.AUDIT_SEAL_MAX_LAG_SECONDS = 1
    with OpenWriter("tests.sealer.straggler") as straggler:
        later = audit_record(actor=None, action="tests.sealer.later")
        wait_until(lambda: seal_pending(wait=0.1) == 1, timeout=10, what="the sealer to pass the straggler")
        straggler.end(commit=True)
    assert seal_pending() == 1
    assert places() == [(straggler.event_id, 2), (later.id, 1)]
    assert audit_chain_verify().intact


@postgres
def test_only_one_sealer_works_at_a_time():
    audit_record(actor=None, action="tests.sealer.one")
    with connection.cursor() as cursor, transaction.atomic():
        # Another sealer holds the lock: this pass leaves the work to it.
        other = threading.Thread(target=lambda: results.append(seal_pending()) or connection.close())
        results: list[int] = []
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x5365616C])
        other.start()
        other.join(10)
    assert results == [0] and seal_pending() == 1


@pytest.mark.django_db
def test_a_checkpoint_verifies_with_the_public_key_alone_and_a_forged_one_fails():
    audit_record(actor=None, action="tests.sealer.signed")
    seal_pending()
    checkpoint = AuditCheckpoint.objects.get()
    fields = {
        "sequence": checkpoint.sequence,
        "head_hash": checkpoint.head_hash,
        "sealed_at": checkpoint.sealed_at,
        "signature": checkpoint.signature,
    }
    assert checkpoint_signature_ok(**fields, public_key=public_key_bytes())
    assert not checkpoint_signature_ok(**{**fields, "sequence": 2}, public_key=public_key_bytes())
    assert not checkpoint_signature_ok(**{**fields, "head_hash": "0" * 64}, public_key=public_key_bytes())
    assert not checkpoint_signature_ok(**fields, public_key=public_key_bytes(Ed25519PrivateKey.generate().public_key()))
    forged = base64.b64encode(Ed25519PrivateKey.generate().sign(b"anything")).decode()
    assert not checkpoint_signature_ok(**{**fields, "signature": forged}, public_key=public_key_bytes())
    assert not checkpoint_signature_ok(**{**fields, "signature": "not base64!"}, public_key=public_key_bytes())


@pytest.mark.django_db(transaction=True)
def test_healthz_and_metrics_report_a_sealer_that_fell_behind(settings):
    settings.AUDIT_SEAL_MAX_LAG_SECONDS = 1
    client = Client()
    assert client.get("/healthz").json()["audit_sealer"] == "ok"
    event = audit_record(actor=None, action="tests.sealer.lagging")
    metrics = client.get("/metrics").content.decode()
    assert "countersign_audit_unsealed_events 1.0" in metrics
    assert "countersign_audit_oldest_unsealed_seconds" in metrics
    wait_until(
        lambda: client.get("/healthz").json()["audit_sealer"] == "behind",
        timeout=10,
        what="/healthz to report the lag",
    )
    response = client.get("/healthz")
    assert response.status_code == 200  # reported; the web itself serves as before
    seal_pending()
    assert AuditEvent.objects.get(pk=event.pk).sequence == 1
    assert client.get("/healthz").json()["audit_sealer"] == "ok"
    assert "countersign_audit_unsealed_events 0.0" in client.get("/metrics").content.decode()


@pytest.mark.django_db
def test_a_configured_key_is_used_and_never_shown(settings):
    from audit import signing

    raw = base64.b64encode(bytes(range(32))).decode()
    settings.AUDIT_SIGNING_KEY = raw
    signing.signing_key.cache_clear()
    try:
        expected = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
        assert public_key_bytes() == public_key_bytes(expected)
        settings.AUDIT_SIGNING_KEY = "not a key"
        signing.signing_key.cache_clear()
        with pytest.raises(Exception, match="AUDIT_SIGNING_KEY is not an Ed25519 private key") as caught:
            signing.signing_key()
        assert "not a key" not in str(caught.value)
    finally:
        signing.signing_key.cache_clear()


@pytest.mark.django_db
@pytest.mark.skipif(not settings.IS_POSTGRES, reason="PostgreSQL only")
def test_a_batch_sealed_in_one_statement_is_checked_link_by_link_in_any_row_order():
    from django.db import IntegrityError

    from audit.chain import GENESIS_HASH, HASHED_FIELDS, chain_hash
    from audit.sealer import _SEAL_BATCH

    events = [audit_record(actor=None, action="tests.sealer.batch") for _ in range(4)]
    rows = AuditEvent.objects.filter(pk__in=[e.pk for e in events]).order_by("id").values("id", *HASHED_FIELDS)
    places, prev_hash = [], GENESIS_HASH
    for sequence, row in enumerate(rows, start=1):
        event_hash = chain_hash(prev_hash=prev_hash, fields=row)
        places.append((sequence, prev_hash, event_hash, row["id"]))
        prev_hash = event_hash

    def seal(batch):
        with connection.cursor() as cursor:
            cursor.execute(_SEAL_BATCH, [list(column) for column in zip(*batch, strict=True)])

    broken = [*places[:2], (3, "b" * 64, places[2][2], places[2][3]), places[3]]
    with pytest.raises(IntegrityError, match="would not link to the one before it"), transaction.atomic():
        seal(broken)
    with pytest.raises(IntegrityError, match="would not link"), transaction.atomic():
        seal(places[1:])  # no number 1 before them
    assert AuditEvent.objects.filter(sequence__isnull=False).count() == 0
    seal(list(reversed(places)))  # the statement's row order does not matter
    assert audit_chain_verify().count == 4
