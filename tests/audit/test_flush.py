"""The database refuses UPDATE and DELETE of audit events (PostgreSQL: TRUNCATE too); flush
empties the log only when asked to (or in the test environment, which needs it after
transactional tests)."""

from __future__ import annotations

import sqlite3
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from audit.maintenance import FLUSH_TABLE, TRUNCATE_SETTING, audit_truncate_allowed
from audit.models import AuditEvent
from audit.services import audit_record
from tests.audit.conftest import needs_postgres

TABLE = AuditEvent._meta.db_table
needs_sqlite = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")


def run_sql(sql: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def refused(sql: str, params=None) -> str:
    # A savepoint, so the test's transaction survives the error.
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        run_sql(sql, params)
    return str(caught.value)


@pytest.mark.django_db
class TestTriggers:
    """On both databases: raw SQL, past the model's guards, is refused by the database."""

    def test_update_is_refused(self):
        event = audit_record(actor=None, action="tests.guard.update", data={"amount": 100})
        message = refused(f"UPDATE {TABLE} SET data = %s WHERE id = %s", ['{"amount": 1}', event.id])
        assert "audit log is append-only: UPDATE" in message
        assert AuditEvent.objects.get(pk=event.pk).data == {"amount": 100}

    def test_delete_is_refused(self):
        event = audit_record(actor=None, action="tests.guard.delete")
        assert "audit log is append-only: DELETE" in refused(f"DELETE FROM {TABLE} WHERE id = %s", [event.id])
        assert "audit log is append-only: DELETE" in refused(f"DELETE FROM {TABLE}")
        assert AuditEvent.objects.filter(pk=event.pk).exists()

    def test_insert_still_works(self):
        audit_record(actor=None, action="tests.guard.insert")
        audit_record(actor=None, action="tests.guard.insert")
        assert AuditEvent.objects.count() == 2


@needs_postgres
@pytest.mark.postgres
@pytest.mark.django_db
class TestPostgresTruncate:
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


def flush_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {FLUSH_TABLE}")
        return cursor.fetchone()[0]


@needs_sqlite
@pytest.mark.django_db
class TestSqliteDelete:
    def test_delete_is_allowed_with_the_maintenance_hatch_and_only_there(self):
        audit_record(actor=None, action="tests.guard.delete")
        with audit_truncate_allowed():
            assert flush_rows() == 1
            # UPDATE stays refused even then: flush only deletes.
            assert "append-only: UPDATE" in refused(f"UPDATE {TABLE} SET action = %s", ["tests.guard.changed"])
            run_sql(f"DELETE FROM {TABLE}")
        assert AuditEvent.objects.count() == 0
        assert flush_rows() == 0  # removed again before the transaction ends
        audit_record(actor=None, action="tests.guard.delete")
        assert "append-only: DELETE" in refused(f"DELETE FROM {TABLE}")

    def test_an_error_inside_the_hatch_rolls_its_row_back(self):
        audit_record(actor=None, action="tests.guard.delete")
        with pytest.raises(RuntimeError), audit_truncate_allowed():
            run_sql(f"DELETE FROM {TABLE}")
            raise RuntimeError("flush failed")
        assert flush_rows() == 0
        assert AuditEvent.objects.count() == 1  # the DELETE went with the rollback


@needs_sqlite
@pytest.mark.django_db(transaction=True)
def test_sqlite_refuses_another_client_too():
    """Not only Django's connections: the sqlite3 module (or the sqlite3 shell) on the file is refused."""
    event = audit_record(actor=None, action="tests.guard.other-client", data={"amount": 100})
    other = sqlite3.connect(str(connection.settings_dict["NAME"]), timeout=20)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="audit log is append-only: UPDATE"):
            other.execute(f"UPDATE {TABLE} SET data = ? WHERE id = ?", ['{"amount": 1}', event.id])
        with pytest.raises(sqlite3.IntegrityError, match="audit log is append-only: DELETE"):
            other.execute(f"DELETE FROM {TABLE}")
        other.rollback()
    finally:
        other.close()
    assert AuditEvent.objects.get(pk=event.pk).data == {"amount": 100}


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
