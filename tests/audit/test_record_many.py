"""audit_record_many: a batch of events appended with one INSERT, as audit_record appends each."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_event, audit_record, audit_record_many
from tests.audit.conftest import sealed

pytestmark = pytest.mark.django_db


def test_a_batch_is_one_insert_in_order_pending_then_sealed_like_single_events():
    single = audit_record(actor="policy", action="tests.many.single", data={"n": 0})
    batch = [
        audit_event(actor="policy", action="tests.many.batch", data={"n": n, "email": "jane@example.com"})
        for n in range(1, 4)
    ]
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        audit_record_many(batch)
    inserts = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    stored = list(AuditEvent.objects.filter(action="tests.many.batch").order_by("id"))
    assert [event.pk for event in stored] == [event.pk for event in batch]
    assert [event.data["n"] for event in stored] == [1, 2, 3]
    assert all(event.sequence is None and event.hash is None for event in stored)  # pending
    assert "jane@example.com" not in str(stored[0].data)  # masked as audit_record masks
    events = sealed(single, *batch)
    assert [event.sequence for event in events] == [events[0].sequence + n for n in range(4)]
    assert audit_chain_verify().intact


@pytest.mark.django_db(transaction=True)
def test_a_batch_appends_inside_a_transaction_only():
    event = audit_event(actor=None, action="tests.many.outside")
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError):
        audit_record_many([event])
    assert not AuditEvent.objects.filter(action="tests.many.outside").exists()


def test_a_batch_refuses_events_not_made_by_audit_event_or_already_placed():
    made_elsewhere = AuditEvent(action="tests.many.forged")
    with pytest.raises(PermissionError):
        audit_record_many([made_elsewhere])
    placed = audit_event(actor=None, action="tests.many.placed")
    placed.hash = "0" * 64
    with pytest.raises(PermissionError):
        audit_record_many([placed])
    existing = audit_record(actor=None, action="tests.many.existing")
    with pytest.raises(PermissionError):
        audit_record_many([existing])
    assert not AuditEvent.objects.filter(action__in=["tests.many.forged", "tests.many.placed"]).exists()
    assert AuditEvent.objects.filter(action="tests.many.existing").count() == 1
