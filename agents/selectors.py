"""Reads of agents for the console: one query each, no N+1."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from guardian.models import GroupObjectPermission, UserObjectPermission

from agents.models import Agent, Run, RunStatus
from approvals.models import ApprovalRequest, ApprovalStatus


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
