"""Who granted each right that lets a user decide an agent's approvals (separation of duties).

A reviewer decides an agent's approvals only by a right someone else gave them
(``approvals.selectors.review_granted_by_another``). The rights that lead there are guardian's
``review_agent`` on the agent, held by the user or by one of their groups, and the membership of
that group. They are made by the console (``approvals.operations.reviewer_assignment_set``),
guardian's object-permission pages and the user admin's groups (agents.admin, approvals.admin),
and by code (``assign_perm``, ``user.groups.add``). Signals on their creation write an
``AccessGrant`` row naming who made them: the actor declared around the change with
``grants_by(user)``, or ``grants_by(SYSTEM)`` for what the deployment sets up outside any
request (seed_demo). A change nobody declared is unattributed and counts as the holder's own,
as does a right created without signals (``bulk_create``, SQL), which has no row at all.
Deleting a right deletes its row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, Literal

from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db.models.signals import m2m_changed, post_delete, post_save
from guardian.models import GroupObjectPermission, UserObjectPermission

from approvals.models import AccessGrant
from audit.types import AnyUser

SYSTEM: Final = "system"
REVIEW_AGENT = "review_agent"

# The user id of whoever makes the rights being created now, SYSTEM, or None: nobody declared.
_actor: ContextVar[int | Literal["system"] | None] = ContextVar("countersign_grant_actor", default=None)


@contextmanager
def grants_by(actor: AnyUser | Literal["system"] | None) -> Iterator[None]:
    """Rights created inside are recorded as granted by ``actor`` (a user, or SYSTEM).
    ``None`` or an anonymous user: unattributed."""
    value: int | Literal["system"] | None
    if actor == SYSTEM:
        value = SYSTEM
    elif isinstance(actor, User) and actor.is_authenticated:
        value = actor.pk
    else:
        value = None
    token = _actor.set(value)
    try:
        yield
    finally:
        _actor.reset(token)


def _attribution() -> dict[str, Any]:
    actor = _actor.get()
    if actor == SYSTEM:
        return {"granted_by_id": None, "by_system": True}
    return {"granted_by_id": actor, "by_system": False}


def _reviewed_agent_id(permission: UserObjectPermission | GroupObjectPermission) -> int | None:
    """The agent's id when the object permission is ``review_agent`` on an agent, else None."""
    content_type = ContentType.objects.get_for_id(permission.content_type_id)
    if (content_type.app_label, content_type.model) != ("agents", "agent"):
        return None
    try:
        if permission.permission.codename != REVIEW_AGENT:
            return None
        return int(permission.object_pk)
    except (Permission.DoesNotExist, ValueError):
        return None


def _user_permission_saved(sender: object, instance: UserObjectPermission, created: bool, **kwargs: Any) -> None:
    agent_id = _reviewed_agent_id(instance) if created and not kwargs.get("raw") else None
    if agent_id is not None:
        AccessGrant.objects.update_or_create(
            user_id=instance.user_id, agent_id=agent_id, group=None, defaults=_attribution()
        )


def _group_permission_saved(sender: object, instance: GroupObjectPermission, created: bool, **kwargs: Any) -> None:
    agent_id = _reviewed_agent_id(instance) if created and not kwargs.get("raw") else None
    if agent_id is not None:
        AccessGrant.objects.update_or_create(
            group_id=instance.group_id, agent_id=agent_id, user=None, defaults=_attribution()
        )


def _user_permission_deleted(sender: object, instance: UserObjectPermission, **kwargs: Any) -> None:
    agent_id = _reviewed_agent_id(instance)
    if agent_id is not None:
        AccessGrant.objects.filter(user_id=instance.user_id, agent_id=agent_id, group=None).delete()


def _group_permission_deleted(sender: object, instance: GroupObjectPermission, **kwargs: Any) -> None:
    agent_id = _reviewed_agent_id(instance)
    if agent_id is not None:
        AccessGrant.objects.filter(group_id=instance.group_id, agent_id=agent_id, user=None).delete()


def _membership_changed(
    sender: object, instance: User | Group, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    # Forward: user.groups.add(group ids); reverse: group.user_set.add(user ids).
    memberships = AccessGrant.objects.filter(agent=None)
    if action == "post_clear":
        memberships.filter(**({"group_id": instance.pk} if reverse else {"user_id": instance.pk})).delete()
        return
    if action not in ("post_add", "post_remove"):
        return
    pairs = [(pk, instance.pk) if reverse else (instance.pk, pk) for pk in pk_set or ()]
    for user_id, group_id in pairs:
        if action == "post_add":
            AccessGrant.objects.update_or_create(
                user_id=user_id, group_id=group_id, agent=None, defaults=_attribution()
            )
        else:
            memberships.filter(user_id=user_id, group_id=group_id).delete()


def connect() -> None:
    """Called once from ApprovalsConfig.ready()."""
    post_save.connect(_user_permission_saved, sender=UserObjectPermission, dispatch_uid="grants.user_perm_saved")
    post_save.connect(_group_permission_saved, sender=GroupObjectPermission, dispatch_uid="grants.group_perm_saved")
    post_delete.connect(_user_permission_deleted, sender=UserObjectPermission, dispatch_uid="grants.user_perm_del")
    post_delete.connect(_group_permission_deleted, sender=GroupObjectPermission, dispatch_uid="grants.group_perm_del")
    m2m_changed.connect(_membership_changed, sender=User.groups.through, dispatch_uid="grants.membership")
