"""Object permissions (django-guardian) under the names design.md gives them.

The contract calls the reviewer's right ``approvals.review_agent``; the permission belongs to
the Agent model, so guardian knows it as ``agents.review_agent`` and refuses the other app
label. This backend answers both names. ``assign_perm`` takes either already.
"""

from __future__ import annotations

from django.db.models import Model
from guardian.backends import ObjectPermissionBackend

from audit.types import AnyUser

ALIASES = {"approvals.review_agent": "agents.review_agent"}


class AgentObjectPermissionBackend(ObjectPermissionBackend):
    def has_perm(self, user_obj: AnyUser, perm: str, obj: Model | None = None) -> bool:
        return super().has_perm(user_obj, ALIASES.get(perm, perm), obj)
