from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

AUDITORS = "auditors"


def is_auditor(user: Any) -> bool:
    """Members of the ``auditors`` group and superusers read the audit log."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: one request asks several times (admin index, changelist).
    cached = getattr(user, "_countersign_is_auditor", None)
    if cached is None:
        cached = user.groups.filter(name=AUDITORS).exists()
        user._countersign_is_auditor = cached
    return cached


class IsAuditor(BasePermission):
    message = "Only auditors may read the audit log."

    def has_permission(self, request, view) -> bool:
        return is_auditor(request.user)
