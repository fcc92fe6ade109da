"""On SQLite too, the database itself refuses UPDATE and DELETE of audit events.

SQLite has no TRUNCATE; Django's ``flush`` empties a table with DELETE. A DELETE is let through
while the table ``audit_flush_allowed`` holds a row, which ``audit.maintenance.audit_truncate_allowed``
inserts and removes again inside the one transaction of the flush: no other connection ever sees
it (the counterpart of PostgreSQL's session setting, migration 0003). UPDATE is always refused.
The table is not a model, so ``flush`` does not empty it.
"""

from django.db import migrations

FLUSH_TABLE = "audit_flush_allowed"
UPDATE_TRIGGER = "audit_event_no_update"
DELETE_TRIGGER = "audit_event_no_delete"


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    name = apps.get_model("audit", "AuditEvent")._meta.db_table
    table = schema_editor.quote_name(name)
    schema_editor.execute(
        f"CREATE TABLE IF NOT EXISTS {FLUSH_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1))", params=None
    )
    for trigger in (UPDATE_TRIGGER, DELETE_TRIGGER):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger}", params=None)
    # The messages match PostgreSQL's: "audit log is append-only: <op> on <schema>.<table> is refused".
    schema_editor.execute(
        f"CREATE TRIGGER {UPDATE_TRIGGER} BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE on main.{name} is refused'); END",
        params=None,
    )
    schema_editor.execute(
        f"CREATE TRIGGER {DELETE_TRIGGER} BEFORE DELETE ON {table} "
        f"WHEN NOT EXISTS (SELECT 1 FROM {FLUSH_TABLE}) "
        f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE on main.{name} is refused'); END",
        params=None,
    )


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for trigger in (UPDATE_TRIGGER, DELETE_TRIGGER):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger}", params=None)
    schema_editor.execute(f"DROP TABLE IF EXISTS {FLUSH_TABLE}", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_append_only_triggers"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
