from __future__ import annotations

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from audit.types import AnyUser

AUDITORS = "auditors"


def is_auditor(user: AnyUser) -> bool:
    """Members of the ``auditors`` group and superusers read the audit log."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: one request asks several times (admin index, changelist).
    cached: bool | None = getattr(user, "_countersign_is_auditor", None)
    if cached is None:
        cached = user.groups.filter(name=AUDITORS).exists()
        setattr(user, "_countersign_is_auditor", cached)  # noqa: B010  (the user model declares no such attribute)
    return cached


class IsAuditor(BasePermission):
    message = "Only auditors may read the audit log."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_auditor(request.user)
