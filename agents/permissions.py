from __future__ import annotations

from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from agents.models import Agent, Run
from audit.types import AnyUser

OPERATORS = "operators"
AUDITORS = "auditors"


def in_group(user: AnyUser, name: str) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: a request asks this several times.
    cache: set[str] | None = getattr(user, "_countersign_groups", None)
    if cache is None:
        cache = set(user.groups.values_list("name", flat=True))
        setattr(user, "_countersign_groups", cache)  # noqa: B010  (the user model declares no such attribute)
    return name in cache


def is_operator(user: AnyUser) -> bool:
    return in_group(user, OPERATORS)


def may_see_dashboard(user: AnyUser) -> bool:
    """Operators and auditors: they see every agent, and the dashboard shows every agent's numbers."""
    return is_operator(user) or in_group(user, AUDITORS)


def agents_visible_to(*, user: AnyUser) -> QuerySet[Agent]:
    if is_operator(user) or in_group(user, AUDITORS):
        return Agent.objects.all()
    return get_objects_for_user(
        user, ["agents.start_run", "agents.review_agent"], klass=Agent, any_perm=True, accept_global_perms=True
    )


def may_start_run(*, user: AnyUser, agent: Agent) -> bool:
    return is_operator(user) or user.has_perm("agents.start_run") or user.has_perm("agents.start_run", agent)


def may_read_run(*, user: AnyUser, run: Run) -> bool:
    return (
        run.started_by_id == user.pk
        or is_operator(user)
        or in_group(user, AUDITORS)
        or user.has_perm("agents.start_run", run.agent)
        or user.has_perm("agents.review_agent", run.agent)
    )


class IsOperator(BasePermission):
    message = "Only operators may do this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_operator(request.user)
