"""Django's ``flush``, aware of the audit log's guard (TRUNCATE on PostgreSQL, DELETE on SQLite).

Outside the test environment flush refuses (on every database, for one behaviour) to empty a non-empty audit log unless
``--allow-audit-truncate`` is given. In the test environment (Django's test runner,
pytest-django) the guard is lifted for the flush that empties every table after a
transactional test. See audit/maintenance.py.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.core.management.commands.flush import Command as FlushCommand

from audit.maintenance import audit_truncate_allowed, in_test_environment
from audit.models import AuditEvent


class Command(FlushCommand):
    help = FlushCommand.help + " A non-empty audit log is emptied only with --allow-audit-truncate."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--allow-audit-truncate",
            action="store_true",
            help="Empty the append-only audit log as well (the database refuses it otherwise).",
        )

    def handle(self, **options: Any) -> None:
        using = options["database"]
        if options.get("allow_audit_truncate") or in_test_environment():
            with audit_truncate_allowed(using=using):
                return super().handle(**options)
        if AuditEvent.objects.using(using).exists():
            raise CommandError(
                "The audit log is append-only and holds events, so the database was not flushed. "
                "Export it first (manage.py audit_export) and pass --allow-audit-truncate to empty it as well."
            )
        return super().handle(**options)
