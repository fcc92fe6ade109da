from __future__ import annotations

from collections.abc import Collection

from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import F, OuterRef, Q, QuerySet, Subquery
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_objects_for_user

from agents.models import Agent
from agents.permissions import is_operator
from approvals.models import AccessGrant, Alert, AlertRule, AlertStatus, ApprovalRequest, BusinessRule, InboxEvent
from audit.types import AnyUser


def agents_reviewable_by(*, user: AnyUser) -> QuerySet[Agent]:
    """Agents on which the user holds the object permission ``review_agent`` (directly or by group)."""
    if not getattr(user, "is_authenticated", False):
        return Agent.objects.none()
    return get_objects_for_user(user, "agents.review_agent", klass=Agent, accept_global_perms=False)


def agent_ids_reviewable_by(*, user: AnyUser) -> list[int]:
    return list(agents_reviewable_by(user=user).values_list("pk", flat=True))


def user_may_review(*, user: AnyUser, agent: Agent) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and user.has_perm("agents.review_agent", agent)


def review_granted_by_another(*, user: AnyUser, agent: Agent) -> bool:
    """Separation of duties: whether ``user`` holds ``review_agent`` on ``agent`` by a right that
    someone else granted (approvals.grants records who). Either held directly, granted by
    another (or by the system); or held by a group whose right and whose membership were both
    granted by others. Being a superuser grants nothing here, nor does an unattributed grant."""
    if not getattr(user, "is_authenticated", False):
        return False
    by_another = Q(by_system=True) | (Q(granted_by__isnull=False) & ~Q(granted_by=user.pk))
    agent_type = ContentType.objects.get_for_model(Agent)
    held = {"content_type": agent_type, "permission__codename": "review_agent", "object_pk": str(agent.pk)}
    if (
        UserObjectPermission.objects.filter(user=user.pk, **held).exists()
        and AccessGrant.objects.filter(by_another, user=user.pk, agent=agent).exists()
    ):
        return True
    groups_holding = GroupObjectPermission.objects.filter(group__user=user.pk, **held).values("group_id")
    groups_granted = AccessGrant.objects.filter(by_another, group__in=groups_holding, agent=agent).values("group_id")
    return AccessGrant.objects.filter(by_another, user=user.pk, group__in=groups_granted, agent=None).exists()


def approval_list_for_reviewer(
    *,
    user: AnyUser,
    status: str | None = None,
    agent: str | None = None,
    risk: str | None = None,
    kind: str | None = None,
    order: str = "newest",
) -> QuerySet[ApprovalRequest]:
    """The inbox: the approvals of agents the user may review, in one query, and one more for
    their agents when the rows are read (``prefetch_related``: an agent's JSON columns are read
    once, not once per row). Callers that show the run add ``select_related("run")``."""
    reviewable = agents_reviewable_by(user=user)
    if order != "urgent" and connection.vendor == "sqlite":
        # SQLite plans "agent_id IN (...)" on the agent index and then sorts every approval of
        # those agents to return the first page (a temporary B-tree over 100,000 rows: a
        # second). Over an expression that no index matches it walks the newest-first index
        # (approval_newest_idx, approval_status_newest_idx) and stops after the page.
        # PostgreSQL weighs both plans by its statistics, so it keeps the plain filter.
        queryset: QuerySet[ApprovalRequest] = ApprovalRequest.objects.alias(agent_key=F("agent_id") + 0).filter(
            agent_key__in=reviewable
        )
    else:
        queryset = ApprovalRequest.objects.filter(agent__in=reviewable)
    queryset = queryset.select_related("decided_by").prefetch_related("agent")
    if status:
        queryset = queryset.filter(status=status)
    if agent:
        queryset = queryset.filter(agent__slug=agent)
    if risk:
        queryset = queryset.filter(risk_class=risk)
    if kind:
        queryset = queryset.filter(kind=kind)
    if order == "urgent":
        # Items without a deadline (after-the-fact reviews) last, the same on every database.
        return queryset.order_by(F("deadline").asc(nulls_last=True), "created_at", "id")
    return queryset.order_by("-created_at", "-id")


def inbox_events_since(
    *, agent_ids: Collection[int], last_seq: int, before: int | None = None, limit: int = 500
) -> list[InboxEvent]:
    """The events of these agents (those a socket's user may review, as it last read them) after
    ``last_seq`` (and before ``before``)."""
    if not agent_ids:
        return []
    events = InboxEvent.objects.filter(pk__gt=last_seq, agent_id__in=agent_ids)
    if before is not None:
        events = events.filter(pk__lt=before)
    return list(events.select_related("approval__agent", "approval__decided_by").order_by("pk")[:limit])


def business_rules() -> QuerySet[BusinessRule]:
    """Every business rule, as the console lists them."""
    return BusinessRule.objects.select_related("agent").order_by("tool", "id")


# The banner shows at most this many firing alerts.
BANNER_ALERTS = 10


def alerts_firing_for(*, user: AnyUser) -> list[Alert]:
    """The firing alerts the banner shows the user, in one query: every one to operators; to
    others, those of rules on an agent they may review. A rule on every agent is the operators'."""
    if not getattr(user, "is_authenticated", False):
        return []
    alerts = Alert.objects.filter(status=AlertStatus.FIRING)
    if not is_operator(user):
        alerts = alerts.filter(rule__agent__in=agents_reviewable_by(user=user))
    return list(alerts.select_related("rule__agent").order_by("fired_at", "pk")[:BANNER_ALERTS])


def alert_rules_with_state() -> QuerySet[AlertRule]:
    """Every alert rule, as the console lists them, with its firing alert's value and time (or None)."""
    firing = Alert.objects.filter(rule=OuterRef("pk"), status=AlertStatus.FIRING)
    return (
        AlertRule.objects.select_related("agent")
        .annotate(
            firing_value=Subquery(firing.values("value")[:1]),
            firing_since=Subquery(firing.values("fired_at")[:1]),
        )
        .order_by("name", "pk")
    )


def alert_list(*, status: str | None = None) -> QuerySet[Alert]:
    """Alerts, newest first, for operators (GET /api/v1/alerts/)."""
    alerts = Alert.objects.select_related("rule__agent").order_by("-fired_at", "-pk")
    return alerts.filter(status=status) if status else alerts
