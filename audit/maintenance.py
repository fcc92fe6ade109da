"""The one sanctioned way to empty the audit table.

On PostgreSQL, migration 0003 installs triggers that refuse UPDATE and DELETE of audit rows and
TRUNCATE of the audit table. TRUNCATE is let through only when the table is already empty or
when the session has set ``countersign.audit_truncate`` to ``on``, which ``audit_truncate_allowed``
does around Django's ``flush`` (see ``audit/management/commands/flush.py``).

On SQLite, migration 0004 installs triggers that refuse UPDATE and DELETE of audit rows; flush
empties tables with DELETE, which is let through while ``audit_flush_allowed`` holds a row.
``audit_truncate_allowed`` runs the flush in one transaction that inserts that row first and
removes it last, so it is never committed and no other connection sees it.

The test suite empties every table with ``flush`` after each transactional test, so it needs this.

The guard stops application code and mistakes, not the database owner: an owner can drop
the trigger. That is why the chain head is published (admin, ``GET /api/v1/audit/head/``)
and can be recorded outside the database, and why ``audit_verify`` exists. For a stronger
setup, run the application as a role that does not own the table and has only SELECT and
INSERT on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction

TRUNCATE_SETTING = "countersign.audit_truncate"
# SQLite: DELETE of audit rows is let through while this table holds a row (migration 0004).
FLUSH_TABLE = "audit_flush_allowed"
_FLUSH_ALLOW = "INSERT INTO audit_flush_allowed (id) VALUES (1)"
_FLUSH_END = "DELETE FROM audit_flush_allowed"


@contextmanager
def _sqlite_delete_allowed(using: str) -> Iterator[None]:
    connection = connections[using]
    with connection.cursor() as cursor:
        installed = FLUSH_TABLE in connection.introspection.table_names(cursor)
    if not installed:  # not migrated yet: no triggers either
        yield
        return
    # One transaction (a savepoint inside an outer one): the row is never committed, and an
    # error in between rolls it back with everything else.
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            cursor.execute(_FLUSH_ALLOW)
        yield
        with connection.cursor() as cursor:
            cursor.execute(_FLUSH_END)


@contextmanager
def audit_truncate_allowed(*, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    connection = connections[using]
    if connection.vendor == "sqlite":
        with _sqlite_delete_allowed(using):
            yield
        return
    if connection.vendor != "postgresql":
        yield
        return
    # Session level (is_local false), outside any transaction block of ours: it must hold
    # for the TRUNCATE that flush runs in its own transaction, and is switched off after.
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', false)", [TRUNCATE_SETTING])
    try:
        yield
    finally:
        if connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, 'off', false)", [TRUNCATE_SETTING])


def in_test_environment() -> bool:
    # django.test.utils.setup_test_environment() (called by Django's test runner and by
    # pytest-django) installs the in-memory mail outbox; nothing else in this project does.
    from django.core import mail

    return hasattr(mail, "outbox")
