from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user
from rest_framework.permissions import BasePermission

from agents.models import Agent, Run

OPERATORS = "operators"
AUDITORS = "auditors"


def in_group(user: Any, name: str) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    # Cached on the user object: a request asks this several times.
    cache = getattr(user, "_countersign_groups", None)
    if cache is None:
        cache = set(user.groups.values_list("name", flat=True))
        user._countersign_groups = cache
    return name in cache


def is_operator(user: Any) -> bool:
    return in_group(user, OPERATORS)


def agents_visible_to(*, user: Any) -> QuerySet[Agent]:
    if is_operator(user) or in_group(user, AUDITORS):
        return Agent.objects.all()
    return get_objects_for_user(
        user, ["agents.start_run", "agents.review_agent"], klass=Agent, any_perm=True, accept_global_perms=True
    )


def may_start_run(*, user: Any, agent: Agent) -> bool:
    return is_operator(user) or user.has_perm("agents.start_run") or user.has_perm("agents.start_run", agent)


def may_read_run(*, user: Any, run: Run) -> bool:
    return (
        run.started_by_id == user.pk
        or is_operator(user)
        or in_group(user, AUDITORS)
        or user.has_perm("agents.start_run", run.agent)
        or user.has_perm("agents.review_agent", run.agent)
    )


class IsOperator(BasePermission):
    message = "Only operators may do this."

    def has_permission(self, request, view) -> bool:
        return is_operator(request.user)
