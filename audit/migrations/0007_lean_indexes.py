"""Fewer indexes on the append path: the chain columns are unique among sealed events only, the
agent slug has no pattern index (exact matches only), and the backlog has its own partial index.

Per append, PostgreSQL writes 8 indexes instead of 12; sealing writes 10 instead of 12. SQLite
remakes the table for these changes, which drops its triggers: they are installed again after.
"""

from importlib import import_module

from django.db import migrations, models


def sqlite_triggers(apps, schema_editor):
    # SQLite drops a table's triggers with it, and altering these columns remakes the table.
    if schema_editor.connection.vendor != "sqlite":
        return
    previous = import_module("audit.migrations.0005_sealed_by_a_sealer")
    events = apps.get_model("audit", "AuditEvent")
    checkpoints = apps.get_model("audit", "AuditCheckpoint")._meta.db_table
    columns = [field.column for field in events._meta.concrete_fields]
    previous._sqlite_install(schema_editor, events._meta.db_table, checkpoints, columns)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0006_merkle_checkpoints_set_sealing'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='auditevent',
            name='audit_event_one_successor',
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='agent_slug',
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='sequence',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['agent_slug'], name='audit_event_agent_slug'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(condition=models.Q(('sequence__isnull', True)), fields=['id'], name='audit_event_pending'),
        ),
        migrations.AddConstraint(
            model_name='auditevent',
            constraint=models.UniqueConstraint(condition=models.Q(('sequence__isnull', False)), fields=('sequence',), name='audit_event_unique_place'),
        ),
        migrations.AddConstraint(
            model_name='auditevent',
            constraint=models.UniqueConstraint(condition=models.Q(('hash__isnull', False)), fields=('hash',), name='audit_event_unique_hash'),
        ),
        migrations.AddConstraint(
            model_name='auditevent',
            constraint=models.UniqueConstraint(condition=models.Q(('prev_hash__isnull', False)), fields=('prev_hash',), name='audit_event_one_successor'),
        ),
        migrations.RunPython(sqlite_triggers, sqlite_triggers, elidable=False),
    ]
