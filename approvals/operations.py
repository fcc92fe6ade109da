"""The operator's writes to oversight: who reviews which agent, the business rules, the alert rules."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from guardian.shortcuts import assign_perm, get_user_perms, remove_perm

from agents.models import Agent
from approvals.grants import REVIEW_AGENT, grants_by
from approvals.models import AlertRule, BusinessRule
from approvals.notify import inbox_access_changed
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser
from config.errors import Forbidden


class SelfGrant(Forbidden):
    code = "self_grant"


def reviewer_assignment_set(
    *, agent: Agent, reviewer: User, granted: bool, by: AnyUser | None, reason: str = ""
) -> bool:
    """Grant or revoke a reviewer's own right (not a group's) to decide an agent's approvals.
    Returns whether it changed. Nobody grants it to themselves (SelfGrant, 403); the grant is
    recorded as made by ``by`` (approvals.grants)."""
    if granted and by is not None and by.is_authenticated and by.pk == reviewer.pk:
        raise SelfGrant(
            "Nobody grants review rights to themselves (separation of duties): another operator must grant them."
        )
    with audited_atomic():
        has = REVIEW_AGENT in get_user_perms(reviewer, agent)
        if has == granted:
            return False
        if granted:
            with grants_by(by):
                assign_perm(REVIEW_AGENT, reviewer, agent)
        else:
            remove_perm(REVIEW_AGENT, reviewer, agent)
        audit_record(
            actor=by,
            action="approvals.reviewer.assigned" if granted else "approvals.reviewer.revoked",
            target=agent,
            data={"reviewer": reviewer.get_username(), "reason": reason},
        )
        inbox_access_changed(user_id=reviewer.pk)
    return True


def business_rule_save(*, rule: BusinessRule, by: AnyUser | None, reason: str = "") -> BusinessRule:
    """Create or change a business rule (validated), audited with the old and new values."""
    rule.full_clean()
    with audited_atomic():
        old: dict[str, Any] | None = None
        if rule.pk:
            previous = BusinessRule.objects.select_for_update(no_key=True).get(pk=rule.pk)
            old = _rule_fields(previous)
        rule.save()
        new = _rule_fields(rule)
        audit_record(
            actor=by,
            action="approvals.rule.created" if old is None else "approvals.rule.changed",
            target=rule,
            data={"old": old, "new": new, "reason": reason},
        )
    return rule


def business_rule_delete(*, rule: BusinessRule, by: AnyUser | None, reason: str = "") -> None:
    with audited_atomic():
        audit_record(
            actor=by,
            action="approvals.rule.deleted",
            target=rule,
            data={
                "old": {key: value for key, value in _rule_fields(rule).items() if key not in ("enabled", "note")},
                "reason": reason,
            },
        )
        rule.delete()


def _rule_fields(rule: BusinessRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in ("tool", "field", "operator", "value", "effect", "enabled", "note")}


def alert_rule_save(*, rule: AlertRule, by: AnyUser | None, reason: str = "") -> AlertRule:
    """Create or change an alert rule (validated), audited with the old and new values (never the secret)."""
    rule.full_clean()
    with audited_atomic():
        old: dict[str, Any] | None = None
        if rule.pk:
            old = _alert_rule_fields(AlertRule.objects.select_for_update(no_key=True).get(pk=rule.pk))
        elif by is not None and by.is_authenticated and rule.created_by_id is None:
            rule.created_by_id = by.pk
        rule.save()
        audit_record(
            actor=by,
            action="approvals.alert_rule.created" if old is None else "approvals.alert_rule.changed",
            target=rule,
            data={"old": old, "new": _alert_rule_fields(rule), "reason": reason},
        )
    return rule


def alert_rule_delete(*, rule: AlertRule, by: AnyUser | None, reason: str = "") -> None:
    with audited_atomic():
        audit_record(
            actor=by,
            action="approvals.alert_rule.deleted",
            target=rule,
            data={"old": _alert_rule_fields(rule), "reason": reason},
        )
        rule.delete()


def _alert_rule_fields(rule: AlertRule) -> dict[str, Any]:
    names = ("name", "metric", "agent_id", "window_seconds", "threshold", "comparison", "webhook_url", "enabled")
    fields = {name: getattr(rule, name) for name in names}
    return {**fields, "threshold": str(rule.threshold), "webhook_signed": bool(rule.webhook_secret)}
