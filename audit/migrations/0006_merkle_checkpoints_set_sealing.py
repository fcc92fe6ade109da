"""Checkpoints sign a Merkle tree head; the sealer writes a batch's places in one statement.

- ``AuditCheckpoint.root_hash``, ``tree_signature`` and ``frontier`` (nullable: SQLite adds the columns in place,
  keeping the table's append-only triggers).
- PostgreSQL: the row trigger keeps the one-time rule (a pending event gets all three chain
  columns at once, nothing else changes), and the link rule moves to a statement trigger over the
  rows the UPDATE sealed: each is number 1 after the genesis hash, or number n + 1 linked to the
  hash of number n, checked once the whole statement has run, so that one UPDATE can seal a
  batch in any row order. With ``sequence`` and ``prev_hash`` unique, the chain still has no gap
  and no fork. SQLite keeps its row trigger (the sealer writes there row by row, in order).
"""

from importlib import import_module

from django.db import migrations, models

GENESIS_HASH = "0" * 64
EVENT_FUNCTION = "audit_event_seal_once"
LINK_FUNCTION = "audit_event_sealed_links"
LINK_TRIGGER = "audit_event_sealed_links"


def _table(apps, schema_editor):
    return schema_editor.quote_name(apps.get_model("audit", "AuditEvent")._meta.db_table)


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = _table(apps, schema_editor)
    schema_editor.execute(
        f"""
        CREATE OR REPLACE FUNCTION {EVENT_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$
        DECLARE
            kept {table}%ROWTYPE;
        BEGIN
            IF TG_OP = 'UPDATE'
               AND OLD.sequence IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
               AND NEW.sequence IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
            THEN
                -- Every other column as it was: the new row with its chain columns blanked is the old
                -- row (a whole-row comparison, so a column added later is covered without a change here).
                kept := NEW;
                kept.sequence := NULL;
                kept.prev_hash := NULL;
                kept.hash := NULL;
                IF kept IS NOT DISTINCT FROM OLD THEN
                    RETURN NEW;  -- the sealer's one write; its link is checked after the statement
                END IF;
            END IF;
            RAISE EXCEPTION 'audit log is append-only: % on %.% is refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Audit events are only inserted (audit_record) and sealed once (audit.sealer).';
        END;
        $body$
        """,
        params=None,
    )
    schema_editor.execute(
        f"""
        CREATE OR REPLACE FUNCTION {LINK_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$
        DECLARE
            unlinked bigint;
        BEGIN
            -- An event's predecessor is sealed by the same statement (the row before it in place
            -- order) or before it (looked up by its unique place): only the first of a batch reads
            -- the table.
            SELECT s.id INTO unlinked FROM (
                SELECT n.id, n.sequence, n.prev_hash,
                       lag(n.sequence) OVER places AS before_sequence, lag(n.hash) OVER places AS before_hash
                FROM sealed AS n WINDOW places AS (ORDER BY n.sequence)
            ) AS s
            WHERE NOT CASE
                WHEN s.before_sequence = s.sequence - 1 THEN s.before_hash = s.prev_hash
                WHEN s.sequence = 1 THEN s.prev_hash = '{GENESIS_HASH}'
                -- A scalar lookup by the unique place (an EXISTS here may be planned as a hash of
                -- the whole table); no predecessor at all is no link.
                ELSE coalesce((SELECT p.hash FROM {table} AS p WHERE p.sequence = s.sequence - 1) = s.prev_hash, false)
            END
            LIMIT 1;
            IF unlinked IS NOT NULL THEN
                RAISE EXCEPTION 'audit log is append-only: event % would not link to the one before it', unlinked
                    USING ERRCODE = 'restrict_violation',
                          HINT = 'Events are sealed in order by audit.sealer: number n + 1 links to the hash of number n.';
            END IF;
            RETURN NULL;
        END;
        $body$
        """,
        params=None,
    )
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {LINK_TRIGGER} ON {table}", params=None)
    schema_editor.execute(
        f"CREATE TRIGGER {LINK_TRIGGER} AFTER UPDATE ON {table} REFERENCING NEW TABLE AS sealed "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {LINK_FUNCTION}()",
        params=None,
    )


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = _table(apps, schema_editor)
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {LINK_TRIGGER} ON {table}", params=None)
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {LINK_FUNCTION}()", params=None)
    previous = import_module("audit.migrations.0005_sealed_by_a_sealer")
    events = apps.get_model("audit", "AuditEvent")._meta.db_table
    checkpoints = apps.get_model("audit", "AuditCheckpoint")._meta.db_table
    previous._postgres_install(schema_editor, events, checkpoints)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0005_sealed_by_a_sealer"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditcheckpoint",
            name="root_hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="tree_signature",
            field=models.CharField(blank=True, max_length=100, null=True),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="frontier",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.RunPython(install, uninstall, elidable=False),
    ]
