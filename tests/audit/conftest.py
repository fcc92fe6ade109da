from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from audit.models import AuditEvent
from audit.sealer import seal_pending

needs_postgres = pytest.mark.skipif(not settings.IS_POSTGRES, reason="PostgreSQL only")


@pytest.fixture
def staff_auditor(auditor) -> User:
    """The auditor persona with the staff flag the admin site asks for."""
    auditor.is_staff = True
    auditor.save(update_fields=["is_staff"])
    return User.objects.get(pk=auditor.pk)


@pytest.fixture
def staff_outsider(outsider) -> User:
    outsider.is_staff = True
    outsider.save(update_fields=["is_staff"])
    return User.objects.get(pk=outsider.pk)


def sealed(*events: AuditEvent) -> list[AuditEvent]:
    """Seal what is pending (as the running sealer does within a second) and read the events back."""
    seal_pending()
    return [AuditEvent.objects.get(pk=event.pk) for event in events]
