from __future__ import annotations

from types import SimpleNamespace

from psycopg import IsolationLevel

from audit import checks


def databases(monkeypatch, **config) -> None:
    monkeypatch.setattr(checks, "settings", SimpleNamespace(DATABASES={"default": config}))


def test_sqlite_without_immediate_transactions_is_flagged(monkeypatch):
    databases(monkeypatch, ENGINE="django.db.backends.sqlite3", OPTIONS={})
    assert [w.id for w in checks.sqlite_transactions_take_the_write_lock(None)] == ["audit.W001"]
    databases(monkeypatch, ENGINE="django.db.backends.sqlite3", OPTIONS={"transaction_mode": "IMMEDIATE"})
    assert checks.sqlite_transactions_take_the_write_lock(None) == []


def test_postgres_above_read_committed_is_flagged(monkeypatch):
    engine = "django.db.backends.postgresql"
    databases(monkeypatch, ENGINE=engine, OPTIONS={"isolation_level": IsolationLevel.SERIALIZABLE})
    assert [w.id for w in checks.postgres_reads_committed_rows(None)] == ["audit.W002"]
    databases(monkeypatch, ENGINE=engine, OPTIONS={"isolation_level": IsolationLevel.READ_COMMITTED})
    assert checks.postgres_reads_committed_rows(None) == []
    databases(monkeypatch, ENGINE=engine, OPTIONS={})
    assert checks.postgres_reads_committed_rows(None) == []


def test_the_project_settings_pass():
    assert checks.sqlite_transactions_take_the_write_lock(None) == []
    assert checks.postgres_reads_committed_rows(None) == []
