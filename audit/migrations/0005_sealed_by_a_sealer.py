"""Events are sealed after commit by one sealer: the chain columns become a one-time write.

Writers insert events pending (``sequence``, ``prev_hash`` and ``hash`` NULL, ``content_hash``
set); audit/sealer.py fills the three chain columns once. The row triggers now let exactly that
through, on PostgreSQL and SQLite alike:

- the event was pending and gets all three columns at once, nothing else changes;
- its place follows the chain: sequence 1 after the genesis hash, or sequence n + 1 linked to
  the hash of event n. With ``sequence`` and ``prev_hash`` unique, the chain has no gap and no fork.

Every other UPDATE and every DELETE is refused as before (DELETE and TRUNCATE let through for
the test suite's flush, see audit/maintenance.py). Checkpoints are append-only the same way.
Events written before this migration were chained in id order: they get their sequence so.
"""

from django.db import migrations, models

GENESIS_HASH = "0" * 64
EVENT_FUNCTION = "audit_event_seal_once"
GENERIC_FUNCTION = "audit_event_append_only"  # migration 0003: refuses all, TRUNCATE as allowed
ROW_TRIGGER = "audit_event_no_update_delete"
CHECKPOINT_ROW_TRIGGER = "audit_checkpoint_no_update_delete"
CHECKPOINT_TRUNCATE_TRIGGER = "audit_checkpoint_no_truncate"
SQLITE_UPDATE = "audit_event_no_update"
SQLITE_DELETE = "audit_event_no_delete"
SQLITE_CHECKPOINT_UPDATE = "audit_checkpoint_no_update"
SQLITE_CHECKPOINT_DELETE = "audit_checkpoint_no_delete"
CHAIN_COLUMNS = ("sequence", "prev_hash", "hash")


def _tables(apps):
    return (
        apps.get_model("audit", "AuditEvent")._meta.db_table,
        apps.get_model("audit", "AuditCheckpoint")._meta.db_table,
    )


def _backfill(schema_editor, table):
    quoted = schema_editor.quote_name(table)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"UPDATE {quoted} AS e SET sequence = n.place FROM "
            f"(SELECT id, row_number() OVER (ORDER BY id) AS place FROM {quoted}) AS n WHERE e.id = n.id",
            params=None,
        )
    else:
        schema_editor.execute(
            f"UPDATE {quoted} SET sequence = (SELECT count(*) FROM {quoted} AS u WHERE u.id <= {quoted}.id)",
            params=None,
        )


def _postgres_install(schema_editor, events, checkpoints):
    table, checkpoint_table = schema_editor.quote_name(events), schema_editor.quote_name(checkpoints)
    schema_editor.execute(
        f"""
        CREATE OR REPLACE FUNCTION {EVENT_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            IF TG_OP = 'UPDATE'
               AND OLD.sequence IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
               AND NEW.sequence IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
               AND (to_jsonb(NEW) - 'sequence' - 'prev_hash' - 'hash') = (to_jsonb(OLD) - 'sequence' - 'prev_hash' - 'hash')
               AND ((NEW.sequence = 1 AND NEW.prev_hash = '{GENESIS_HASH}')
                    OR EXISTS (SELECT 1 FROM {table} AS p WHERE p.sequence = NEW.sequence - 1 AND p.hash = NEW.prev_hash))
            THEN
                RETURN NEW;  -- the sealer's one write: the event's place in the chain
            END IF;
            RAISE EXCEPTION 'audit log is append-only: % on %.% is refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Audit events are only inserted (audit_record) and sealed once (audit.sealer).';
        END;
        $body$
        """,
        params=None,
    )
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {table}", params=None)
    schema_editor.execute(
        f"CREATE TRIGGER {ROW_TRIGGER} BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {EVENT_FUNCTION}()",
        params=None,
    )
    for name, when, each in (
        (CHECKPOINT_ROW_TRIGGER, "UPDATE OR DELETE", "ROW"),
        (CHECKPOINT_TRUNCATE_TRIGGER, "TRUNCATE", "STATEMENT"),
    ):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {checkpoint_table}", params=None)
        schema_editor.execute(
            f"CREATE TRIGGER {name} BEFORE {when} ON {checkpoint_table} "
            f"FOR EACH {each} EXECUTE FUNCTION {GENERIC_FUNCTION}()",
            params=None,
        )


def _sqlite_install(schema_editor, events, checkpoints, columns):
    table = schema_editor.quote_name(events)
    unchanged = " AND ".join(f'NEW."{name}" IS OLD."{name}"' for name in columns if name not in CHAIN_COLUMNS)
    seal_once = (
        "OLD.sequence IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL "
        "AND NEW.sequence IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL "
        f"AND {unchanged} "
        f"AND ((NEW.sequence = 1 AND NEW.prev_hash = '{GENESIS_HASH}') OR EXISTS "
        f"(SELECT 1 FROM {table} AS p WHERE p.sequence = NEW.sequence - 1 AND p.hash = NEW.prev_hash))"
    )
    triggers = {
        SQLITE_UPDATE: (events, "UPDATE", f"NOT ({seal_once})"),
        SQLITE_DELETE: (events, "DELETE", "NOT EXISTS (SELECT 1 FROM audit_flush_allowed)"),
        SQLITE_CHECKPOINT_UPDATE: (checkpoints, "UPDATE", ""),
        SQLITE_CHECKPOINT_DELETE: (checkpoints, "DELETE", "NOT EXISTS (SELECT 1 FROM audit_flush_allowed)"),
    }
    for name, (target, operation, condition) in triggers.items():
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)
        when = f"WHEN {condition} " if condition else ""
        # The messages match PostgreSQL's: "audit log is append-only: <op> on <schema>.<table> is refused".
        schema_editor.execute(
            f"CREATE TRIGGER {name} BEFORE {operation} ON {schema_editor.quote_name(target)} {when}"
            f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {operation} on main.{target} is refused'); END",
            params=None,
        )


def drop_row_triggers(apps, schema_editor):
    events = apps.get_model("audit", "AuditEvent")._meta.db_table
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {schema_editor.quote_name(events)}", params=None)
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {SQLITE_UPDATE}", params=None)


def install(apps, schema_editor):
    events, checkpoints = _tables(apps)
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        return
    _backfill(schema_editor, events)
    if vendor == "postgresql":
        _postgres_install(schema_editor, events, checkpoints)
    else:
        columns = [field.column for field in apps.get_model("audit", "AuditEvent")._meta.concrete_fields]
        _sqlite_install(schema_editor, events, checkpoints, columns)


def uninstall(apps, schema_editor):
    # Back to 0004: the chain columns are required again, so pending events cannot stay.
    events, checkpoints = _tables(apps)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {CHECKPOINT_ROW_TRIGGER} ON {schema_editor.quote_name(checkpoints)}", params=None)
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {CHECKPOINT_TRUNCATE_TRIGGER} ON {schema_editor.quote_name(checkpoints)}", params=None)
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {schema_editor.quote_name(events)}", params=None)
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {EVENT_FUNCTION}()", params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for name in (SQLITE_UPDATE, SQLITE_CHECKPOINT_UPDATE, SQLITE_CHECKPOINT_DELETE):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)


def reinstall_previous(apps, schema_editor):
    # Reversing: 0003 and 0004 install their triggers again (their functions are idempotent).
    from importlib import import_module

    for name in ("0003_append_only_triggers", "0004_append_only_triggers_sqlite"):
        import_module(f"audit.migrations.{name}").install(apps, schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0004_append_only_triggers_sqlite'),
    ]

    operations = [
        migrations.RunPython(drop_row_triggers, reinstall_previous, elidable=False),
        migrations.CreateModel(
            name='AuditCheckpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('sequence', models.BigIntegerField(unique=True)),
                ('head_hash', models.CharField(max_length=64)),
                ('sealed_at', models.DateTimeField()),
                ('signature', models.CharField(max_length=100)),
                ('key_id', models.CharField(max_length=16)),
            ],
            options={
                'ordering': ['sequence'],
            },
        ),
        migrations.AddField(
            model_name='auditevent',
            name='content_hash',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='sequence',
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='hash',
            field=models.CharField(blank=True, max_length=64, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='prev_hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.RunPython(install, uninstall, elidable=False),
    ]
