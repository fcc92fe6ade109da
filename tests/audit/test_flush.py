"""PostgreSQL refuses UPDATE, DELETE and TRUNCATE of audit events; flush empties the log
only when asked to (or in the test environment, which needs it after transactional tests)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from audit.maintenance import TRUNCATE_SETTING, audit_truncate_allowed
from audit.models import AuditEvent
from audit.services import audit_record
from tests.audit.conftest import needs_postgres

TABLE = AuditEvent._meta.db_table


def run_sql(sql: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def refused(sql: str, params=None) -> str:
    # A savepoint, so the test's transaction survives the error.
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        run_sql(sql, params)
    return str(caught.value)


@needs_postgres
@pytest.mark.postgres
@pytest.mark.django_db
class TestTriggers:
    def test_update_is_refused(self):
        event = audit_record(actor=None, action="tests.guard.update", data={"amount": 100})
        message = refused(f"UPDATE {TABLE} SET data = %s WHERE id = %s", ['{"amount": 1}', event.id])
        assert "audit log is append-only: UPDATE" in message
        assert AuditEvent.objects.get(pk=event.pk).data == {"amount": 100}

    def test_delete_is_refused(self):
        event = audit_record(actor=None, action="tests.guard.delete")
        assert "audit log is append-only: DELETE" in refused(f"DELETE FROM {TABLE} WHERE id = %s", [event.id])
        assert AuditEvent.objects.filter(pk=event.pk).exists()

    def test_truncate_is_refused(self):
        audit_record(actor=None, action="tests.guard.truncate")
        assert "audit log is append-only: TRUNCATE" in refused(f"TRUNCATE {TABLE}")
        assert "append-only: TRUNCATE" in refused(f"TRUNCATE {TABLE}, auth_user CASCADE")
        assert AuditEvent.objects.count() == 1

    def test_truncate_of_an_empty_log_is_allowed(self):
        run_sql(f"TRUNCATE {TABLE}")

    def test_truncate_is_allowed_with_the_maintenance_setting(self):
        audit_record(actor=None, action="tests.guard.truncate")
        with audit_truncate_allowed():
            run_sql(f"TRUNCATE {TABLE}")
        assert AuditEvent.objects.count() == 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting(%s, true)", [TRUNCATE_SETTING])
            assert cursor.fetchone()[0] == "off"  # switched off again afterwards

    def test_insert_still_works(self):
        audit_record(actor=None, action="tests.guard.insert")
        audit_record(actor=None, action="tests.guard.insert")
        assert AuditEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_flush_keeps_a_non_empty_log_unless_asked(monkeypatch):
    """Outside the test environment flush refuses to drop audit events, on every database."""
    monkeypatch.setattr("audit.management.commands.flush.in_test_environment", lambda: False)
    audit_record(actor=None, action="tests.guard.flush")

    with pytest.raises(CommandError, match="append-only"):
        call_command("flush", interactive=False, stdout=StringIO())
    assert AuditEvent.objects.count() == 1

    call_command("flush", interactive=False, allow_audit_truncate=True, stdout=StringIO())
    assert AuditEvent.objects.count() == 0
    call_command("flush", interactive=False, stdout=StringIO())  # empty log: nothing to keep


@pytest.mark.django_db(transaction=True)
def test_flush_in_the_test_environment_empties_the_log():
    # What pytest-django does after every transactional test.
    audit_record(actor=None, action="tests.guard.flush")
    call_command("flush", interactive=False, stdout=StringIO())
    assert AuditEvent.objects.count() == 0
