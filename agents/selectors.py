"""Reads of agents and runs for the pages: one query each, no N+1."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_objects_for_user

from agents.models import Agent, Run, RunFeedback, RunStatus
from agents.permissions import AUDITORS, in_group, is_operator
from approvals.models import ApprovalRequest, ApprovalStatus
from audit.types import AnyUser


def agents_overview(*, since: datetime) -> list[Agent]:
    """Every agent with its pending approvals and its runs (and failed runs) since ``since``, in
    one query (subqueries): ``pending_count``, ``runs_24h``, ``failed_24h``."""

    def count(queryset: Any) -> Coalesce:
        grouped = queryset.order_by().values("agent").annotate(n=Count("pk")).values("n")
        return Coalesce(Subquery(grouped, output_field=IntegerField()), Value(0))

    pending = ApprovalRequest.objects.filter(agent=OuterRef("pk"), status=ApprovalStatus.PENDING)
    recent = Run.objects.filter(agent=OuterRef("pk"), created_at__gte=since)
    return list(
        Agent.objects.annotate(
            pending_count=count(pending),
            runs_24h=count(recent),
            failed_24h=count(recent.filter(status=RunStatus.FAILED)),
        ).order_by("slug")
    )


def review_grants_by_agent() -> dict[str, dict[str, list[str]]]:
    """Who may review each agent (by agent id): users and groups holding ``review_agent`` on it."""
    agent_type = ContentType.objects.get_for_model(Agent)
    users = (
        UserObjectPermission.objects.filter(content_type=agent_type, permission__codename="review_agent")
        .select_related("user")
        .order_by("object_pk", "user__username")
    )
    groups = (
        GroupObjectPermission.objects.filter(content_type=agent_type, permission__codename="review_agent")
        .select_related("group")
        .order_by("object_pk", "group__name")
    )
    by_agent: dict[str, dict[str, list[str]]] = {}
    for grant in users:
        by_agent.setdefault(str(grant.object_pk), {"users": [], "groups": []})["users"].append(grant.user.username)
    for group_grant in groups:
        by_agent.setdefault(str(group_grant.object_pk), {"users": [], "groups": []})["groups"].append(
            group_grant.group.name
        )
    return by_agent


def _sees_every_run(user: AnyUser) -> bool:
    return is_operator(user) or in_group(user, AUDITORS)


def _agents_granted_to(user: AnyUser) -> QuerySet[Agent]:
    """Agents on which ``user`` holds ``start_run`` or ``review_agent`` as an object permission,
    directly or through a group. What ``user.has_perm(perm, agent)`` answers in ``may_read_run``:
    a global permission does not count there (ModelBackend ignores it for an object), nor does
    any permission of an inactive user."""
    if not user.is_active:
        return Agent.objects.none()
    return get_objects_for_user(
        user, ["agents.start_run", "agents.review_agent"], klass=Agent, any_perm=True, accept_global_perms=False
    )


def run_list_for_user(
    *,
    user: AnyUser,
    agent_slug: str = "",
    status: str = "",
    starter: str = "",
    created_from: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Run]:
    """The runs ``agents.permissions.may_read_run`` lets ``user`` read, as one queryset, newest
    first, filtered; agent and starter in the same query (``select_related``).

    A test holds it to ``may_read_run`` run by run: the list never shows a run whose trace
    would answer 404.
    """
    runs = Run.objects.select_related("agent", "started_by").defer("redactions", "result")
    if not user.is_authenticated:
        return runs.none()
    if not _sees_every_run(user):
        runs = runs.filter(Q(started_by_id=user.pk) | Q(agent__in=_agents_granted_to(user)))
    if agent_slug:
        runs = runs.filter(agent__slug=agent_slug)
    if status:
        runs = runs.filter(status=status)
    if starter:
        runs = runs.filter(started_by__username=starter)
    if created_from is not None:
        runs = runs.filter(created_at__gte=created_from)
    if created_before is not None:
        runs = runs.filter(created_at__lt=created_before)
    # The id breaks ties between runs created in the same instant, so pages never overlap.
    return runs.order_by("-created_at", "-id")


def run_agents_for_user(*, user: AnyUser) -> QuerySet[Agent]:
    """The agents whose runs ``user`` may read some of: the choices of the runs page's agent filter."""
    if not user.is_authenticated:
        return Agent.objects.none()
    if _sees_every_run(user):
        return Agent.objects.order_by("name", "slug")
    own = Run.objects.filter(started_by_id=user.pk).values("agent_id")
    return Agent.objects.filter(Q(pk__in=own) | Q(pk__in=_agents_granted_to(user))).order_by("name", "slug")


def run_feedback_list(*, run: Run) -> list[RunFeedback]:
    """Every feedback on the run, oldest first, with its author."""
    return list(run.feedback.select_related("user").order_by("created_at", "id"))
