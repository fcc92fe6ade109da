"""The chain: appends link up, the stored form hashes the same after a database round
trip, and audit_verify finds the first altered or missing event."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from audit.chain import GENESIS_HASH, HASHED_FIELDS, chain_hash, json_value
from audit.models import AuditCheckpoint, AuditEvent
from audit.sealer import SealRefused, seal_pending
from audit.selectors import audit_chain_verify, audit_head
from audit.services import audit_record
from tests.audit.conftest import sealed

pytestmark = pytest.mark.django_db

TABLE = AuditEvent._meta.db_table


def verify_output() -> str:
    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def broken_output() -> str:
    with pytest.raises(CommandError) as caught:
        call_command("audit_verify", stdout=StringIO())
    assert caught.value.returncode == 1
    return str(caught.value)


def test_appends_link_into_one_chain_and_verify_reports_it(outsider):
    written = [audit_record(actor=outsider, action="tests.chain.append", data={"n": n}) for n in range(5)]
    assert all(event.sequence is None and event.hash is None for event in written)  # pending until sealed
    events = sealed(*written)

    assert [event.sequence for event in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.hash
    head = audit_head()
    assert head["sequence"] == 5 and head["head_hash"] == events[-1].hash and head["pending"] == 0
    assert verify_output().splitlines() == [
        f"5 events, chain intact, head {events[-1].hash}",
        "1 checkpoint signatures verify; 0 events pending",
    ]


def test_empty_log_verifies():
    assert verify_output().splitlines()[0] == f"0 events, chain intact, head {GENESIS_HASH}"
    head = audit_head()
    assert (head["sequence"], head["head_hash"], head["signature"], head["pending"]) == (0, GENESIS_HASH, None, 0)


def test_actor_and_target_fields(support_agent, outsider):
    from agents.models import Run

    run = Run.objects.create(agent=support_agent)
    by_user = audit_record(actor=outsider, action="tests.chain.fields", target=run)
    by_agent = audit_record(actor=support_agent, action="tests.chain.fields", target=support_agent)
    by_policy = audit_record(actor="policy", action="tests.chain.fields")
    by_system = audit_record(actor=None, action="tests.chain.fields")

    assert (by_user.actor_type, by_user.actor_id, by_user.actor_repr) == ("user", str(outsider.pk), "outsider")
    assert (by_user.target_type, by_user.target_id, by_user.run_id, by_user.agent_slug) == (
        "agents.run",
        str(run.pk),
        run.pk,
        support_agent.slug,
    )
    assert (by_agent.actor_type, by_agent.actor_repr) == ("agent", f"agent:{support_agent.slug}")
    assert by_agent.agent_slug == support_agent.slug and by_agent.run_id is None
    assert (by_policy.actor_type, by_policy.actor_repr) == ("system", "policy")
    assert (by_system.actor_type, by_system.actor_repr) == ("system", "system")


def test_stored_data_hashes_the_same_after_a_round_trip():
    # Keys out of order, numbers jsonb prints differently, values JSON has no type for.
    data = {
        "zeta": 1,
        "alpha": {"b": [3, 2, 1], "a": None, 7: "int key", True: "bool key"},
        "amount": Decimal("1234.50"),
        "at": dt.datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=dt.UTC),
        "day": dt.date(2026, 11, 24),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "big": 1e16,
        "huge": 1.7976931348623157e308,
        "tiny": 5e-324,
        "neg_zero": -0.0,
        "ratio": 0.1 + 0.2,
        "whole": 2.0,
        "nan": float("nan"),
        "inf": float("-inf"),
        "tuple": (1, "two"),
        "set": {3, 1, 2},
        "text": "ümlaut ✓ \x00 nul",
        "bigint": 2**70,
    }
    [event] = sealed(audit_record(actor=None, action="tests.chain.canonical", data=data))

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.data == event.data  # what was hashed is what the database gives back
    fields = {name: getattr(stored, name) for name in HASHED_FIELDS}
    assert chain_hash(prev_hash=stored.prev_hash, fields=fields) == stored.hash
    assert stored.data["amount"] == "1234.50"
    assert stored.data["at"] == "2026-11-24T09:30:15.123456+00:00"
    assert stored.data["big"] == 10**16 and stored.data["whole"] == 2 and stored.data["neg_zero"] == 0
    assert stored.data["ratio"] == 0.1 + 0.2
    assert stored.data["nan"] == "NaN" and stored.data["inf"] == "-Infinity"
    assert stored.data["alpha"]["7"] == "int key" and stored.data["alpha"]["true"] == "bool key"
    assert stored.data["set"] == [1, 2, 3] and stored.data["tuple"] == [1, "two"]
    assert "\x00" not in stored.data["text"]
    assert audit_chain_verify().intact


def test_json_value_is_idempotent():
    once = json_value({"a": 1.5, "b": 3.0, "c": Decimal("2"), "d": [float("inf")]})
    assert json_value(once) == once == {"a": 1.5, "b": 3, "c": "2", "d": ["Infinity"]}


def test_created_at_hashes_in_utc_whatever_the_time_zone():
    [event] = sealed(audit_record(actor=None, action="tests.chain.tz"))
    fields = {name: getattr(event, name) for name in HASHED_FIELDS}
    shifted = {**fields, "created_at": event.created_at.astimezone(dt.timezone(dt.timedelta(hours=-5)))}
    assert chain_hash(prev_hash=event.prev_hash, fields=shifted) == event.hash


def test_audit_record_joins_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=None, action="tests.chain.rolled_back")
        raise RuntimeError("the change failed")
    assert not AuditEvent.objects.filter(action="tests.chain.rolled_back").exists()
    [kept] = sealed(audit_record(actor=None, action="tests.chain.kept"))
    assert kept.prev_hash == GENESIS_HASH and kept.sequence == 1  # the rolled-back event left no trace in the chain


def test_action_is_required_and_bounded():
    with pytest.raises(ValueError):
        audit_record(actor=None, action="")
    with pytest.raises(ValueError):
        audit_record(actor=None, action="x." * 60)


def test_long_reprs_are_cut_to_the_column_before_hashing():
    event = audit_record(actor="s" * 500, action="tests.chain.long")
    assert len(event.actor_repr) == 200
    assert audit_chain_verify().intact


# --- The model refuses every other way of writing ------------------------------------


def test_model_and_queryset_refuse_changes():
    event = audit_record(actor=None, action="tests.chain.guard", data={"v": 1})
    event.data = {"v": 2}
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(data={"v": 3})
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.bulk_update([event], ["data"])
    with pytest.raises(PermissionError):
        AuditEvent.objects.bulk_create([AuditEvent(action="tests.chain.bulk")])
    with pytest.raises(PermissionError):
        AuditEvent.objects.create(action="tests.chain.direct", prev_hash="x", hash="y")
    assert AuditEvent.objects.get(pk=event.pk).data == {"v": 1}


def test_the_database_refuses_a_fork_and_a_gap():
    first, _ = sealed(
        audit_record(actor=None, action="tests.chain.fork"), audit_record(actor=None, action="tests.chain.fork")
    )
    fork = AuditEvent(action="tests.chain.fork", created_at=first.created_at, prev_hash=first.hash, hash="f" * 64)
    fork._chain_append = True
    with pytest.raises(IntegrityError, match="audit_event_one_successor|prev_hash"), transaction.atomic():
        fork.save()
    # Sealing by hand: the trigger lets a pending event take only the next place, linked to its head.
    pending = audit_record(actor=None, action="tests.chain.fork")
    for place, prev_hash in ((2, first.hash), (4, GENESIS_HASH), (3, first.hash)):
        with pytest.raises(IntegrityError), transaction.atomic():
            _raw(
                f"UPDATE {TABLE} SET sequence = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [place, prev_hash, "e" * 64, pending.id],
            )
    assert AuditEvent.objects.get(pk=pending.pk).sequence is None


# --- Tampering ----------------------------------------------------------------------


def _raw(sql: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _tamper(sql: str, params, table: str = TABLE) -> None:
    """Change rows behind the application's back, as a database superuser would."""
    # Inside the test's transaction: rolled back with it, triggers included.
    if connection.vendor == "postgresql":
        _raw(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        _raw(sql, params)
        _raw(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    else:
        # SQLite cannot disable a trigger: the owner of the file drops and recreates them.
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
            triggers = cursor.fetchall()
        assert triggers, "the audit table has no triggers on SQLite (migration 0004)"
        for name, _sql in triggers:
            _raw(f"DROP TRIGGER {name}")
        _raw(sql, params)
        for _name, create in triggers:
            _raw(create)


def test_altered_data_is_named_by_audit_verify(outsider):
    events = sealed(
        *[audit_record(actor=outsider, action="tests.chain.refund", data={"amount": 100}) for _ in range(4)]
    )
    victim = events[2]

    _tamper(f"UPDATE {TABLE} SET data = %s WHERE id = %s", ['{"amount": 1}', victim.id])

    message = broken_output()
    assert f"Chain broken at event {victim.id}" in message
    assert f"found hash    {victim.hash}" in message
    report = audit_chain_verify()
    assert report.broken.id == victim.id and report.count == 2
    assert report.broken.found == victim.hash and report.broken.expected != victim.hash


def test_a_removed_event_is_named_by_audit_verify():
    events = sealed(*[audit_record(actor=None, action="tests.chain.remove", data={"n": n}) for n in range(4)])

    _tamper(f"DELETE FROM {TABLE} WHERE id = %s", [events[1].id])

    message = broken_output()
    assert f"event {events[2].id}" in message and "its place is not the next one" in message
    assert "expected hash 2" in message and "found hash    3" in message


def test_a_rewritten_tail_is_caught_by_the_recorded_head():
    audit_record(actor=None, action="tests.chain.head")
    [last] = sealed(audit_record(actor=None, action="tests.chain.head"))
    recorded = last.hash
    out = StringIO()
    call_command("audit_verify", expect_head=recorded, stdout=out)
    assert "chain intact" in out.getvalue()

    with pytest.raises(CommandError, match="does not contain the expected head"):
        call_command("audit_verify", expect_head="a" * 64, stdout=StringIO())


def test_tampering_requires_disabling_the_trigger():
    [event] = sealed(audit_record(actor=None, action="tests.chain.guard", data={"amount": 100}))
    pending = audit_record(actor=None, action="tests.chain.guard", data={"amount": 100})
    for victim in (event, pending):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            _raw(f"UPDATE {TABLE} SET data = %s WHERE id = %s", ['{"amount": 1}', victim.id])
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            _raw(f"DELETE FROM {TABLE} WHERE id = %s", [victim.id])
    # Sealed once: its place cannot be written again.
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        _raw(f"UPDATE {TABLE} SET sequence = NULL, prev_hash = NULL, hash = NULL WHERE id = %s", [event.id])
    assert verify_output().startswith("1 events, chain intact")


def test_an_altered_pending_event_is_named_and_not_sealed():
    [before] = sealed(audit_record(actor=None, action="tests.chain.pending", data={"amount": 100}))
    victim = audit_record(actor=None, action="tests.chain.pending", data={"amount": 100})
    after = audit_record(actor=None, action="tests.chain.pending", data={"amount": 100})

    _tamper(f"UPDATE {TABLE} SET data = %s WHERE id = %s", ['{"amount": 1}', victim.id])

    message = broken_output()
    assert f"Chain broken at event {victim.id}: it is pending" in message
    with pytest.raises(SealRefused, match=f"audit event {victim.id} was changed"):
        seal_pending()
    # Neither it nor what came after it is sealed: sealing past it would break the id order.
    assert [AuditEvent.objects.get(pk=e.pk).sequence for e in (before, victim, after)] == [1, None, None]


def test_a_forged_or_missing_checkpoint_is_named():
    sealed(audit_record(actor=None, action="tests.chain.checkpoint"))
    checkpoint_table = AuditCheckpoint._meta.db_table
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        _raw(f"UPDATE {checkpoint_table} SET head_hash = %s", ["a" * 64])
    _tamper(f"UPDATE {checkpoint_table} SET signature = %s", [base64.b64encode(b"x" * 64).decode()], checkpoint_table)
    assert "the signature of checkpoint 1 does not verify" in broken_output()


def test_events_removed_from_the_end_are_caught_by_the_checkpoint():
    first, last = sealed(
        audit_record(actor=None, action="tests.chain.tail"), audit_record(actor=None, action="tests.chain.tail")
    )
    _tamper(f"DELETE FROM {TABLE} WHERE id = %s", [last.id])
    message = broken_output()
    assert "Chain broken at checkpoint 2" in message and "the chain ends at 1" in message
