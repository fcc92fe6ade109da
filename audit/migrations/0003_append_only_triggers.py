"""On PostgreSQL, the database itself refuses UPDATE, DELETE and TRUNCATE of audit events.

TRUNCATE is let through when the table is empty (nothing is lost) or when the session set
``countersign.audit_truncate = 'on'``: see audit/maintenance.py. SQLite gets its triggers in
migration 0004.
"""

from django.db import migrations

FUNCTION = "audit_event_append_only"
ROW_TRIGGER = "audit_event_no_update_delete"
TRUNCATE_TRIGGER = "audit_event_no_truncate"


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("audit", "AuditEvent")._meta.db_table)
    # params=None: the SQL holds literal % signs (RAISE placeholders), not query parameters.
    schema_editor.execute(
        f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$
        DECLARE
            has_rows boolean;
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                IF current_setting('countersign.audit_truncate', true) = 'on' THEN
                    RETURN NULL;
                END IF;
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO has_rows;
                IF NOT has_rows THEN
                    RETURN NULL;
                END IF;
            END IF;
            RAISE EXCEPTION 'audit log is append-only: % on %.% is refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Audit events are only ever inserted, by audit.services.audit_record().';
        END;
        $body$
        """,
        params=None,
    )
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {table}", params=None)
    schema_editor.execute(
        f"CREATE TRIGGER {ROW_TRIGGER} BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()",
        params=None,
    )
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {table}", params=None)
    schema_editor.execute(
        f"CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()",
        params=None,
    )


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("audit", "AuditEvent")._meta.db_table)
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {table}", params=None)
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {table}", params=None)
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_one_successor"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
