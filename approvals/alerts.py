"""The one writer of Alert.status: evaluate the rules, fire once, resolve once.

Each evaluation measures every enabled rule (approvals.alert_metrics) and compares the value with
its threshold. A rule whose condition holds and that has no firing alert fires one; one whose
condition cleared resolves its firing alert; otherwise nothing moves (a firing alert only takes
the latest value). Firing and resolving are audited in the same transaction and ring the rule's
signed webhook after commit.

Two evaluators at once (two beat ticks, a manual run) fire a rule once: the audit chain lock,
taken first by every audited transaction, serializes them, the second one looks again under it
and finds the first one's alert, and the partial unique constraint on firing alerts refuses a
second one should anything slip past.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.alert_metrics import Measure, alert_rule_measure
from approvals.models import ALERT_MOVES, Alert, AlertRule, AlertStatus
from approvals.notify import alert_webhook_enqueue
from audit.services import audit_record, audited_atomic

ACTOR = "alerts"


def alert_move(*, alert_id: int, to: AlertStatus, **fields: Any) -> bool:
    """Move the alert to ``to`` from any status ``ALERT_MOVES`` allows. Returns whether it moved."""
    sources = [source for source, targets in ALERT_MOVES.items() if to in targets]
    return Alert.objects.filter(pk=alert_id, status__in=sources).update(status=to, **fields) == 1


def alerts_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Evaluate every rule; a disabled rule's firing alert resolves. Returns what moved."""
    now = now or timezone.now()
    counts = {"fired": 0, "resolved": 0}
    for rule in AlertRule.objects.select_related("agent").order_by("pk"):
        outcome = alert_rule_evaluate(rule=rule, now=now)
        if outcome is not None:
            counts[outcome] += 1
    return counts


def alert_rule_evaluate(*, rule: AlertRule, now: datetime) -> str | None:
    """``"fired"``, ``"resolved"`` or None (nothing moved) for one rule."""
    firing = Alert.objects.filter(rule=rule, status=AlertStatus.FIRING).first()
    if not rule.enabled:
        if firing is None:
            return None
        measure = Measure(firing.value, {**firing.evidence, "reason": "rule disabled"})
        return "resolved" if alert_resolve(alert=firing, measure=measure, now=now) else None
    measure = alert_rule_measure(rule=rule, now=now)
    holds = measure.value > rule.threshold
    if holds and firing is None:
        return "fired" if alert_fire(rule=rule, measure=measure, now=now) is not None else None
    if holds and firing is not None:
        # Still firing: the banner shows the latest value; nothing is audited or sent.
        Alert.objects.filter(pk=firing.pk, status=AlertStatus.FIRING).update(value=measure.value)
        return None
    if firing is not None:
        return "resolved" if alert_resolve(alert=firing, measure=measure, now=now) else None
    return None


def alert_fire(*, rule: AlertRule, measure: Measure, now: datetime) -> Alert | None:
    """Create the rule's firing alert unless one exists. Returns it, or None if another fired first."""
    with audited_atomic():
        # Under the chain lock: an evaluator that fired this rule meanwhile has committed.
        if Alert.objects.filter(rule=rule, status=AlertStatus.FIRING).exists():
            return None
        try:
            # A savepoint: the unique constraint's refusal must not spoil the transaction.
            with transaction.atomic():
                alert = Alert.objects.create(
                    rule=rule, status=AlertStatus.FIRING, value=measure.value, evidence=measure.evidence, fired_at=now
                )
        except IntegrityError:
            return None
        audit_record(actor=ACTOR, action="approvals.alert.fired", target=alert, data=_audit_data(alert))
        alert_webhook_enqueue(alert=alert, event="alert.fired")
    return alert


def alert_resolve(*, alert: Alert, measure: Measure, now: datetime) -> bool:
    """Resolve a firing alert. Returns whether this call resolved it."""
    with audited_atomic():
        moved = alert_move(
            alert_id=alert.pk, to=AlertStatus.RESOLVED, resolved_at=now, value=measure.value, evidence=measure.evidence
        )
        if not moved:
            return False  # another evaluator resolved it first
        alert.refresh_from_db()
        audit_record(actor=ACTOR, action="approvals.alert.resolved", target=alert, data=_audit_data(alert))
        alert_webhook_enqueue(alert=alert, event="alert.resolved")
    return True


def _audit_data(alert: Alert) -> dict[str, object]:
    rule = alert.rule
    return {
        "rule": rule.name,
        "metric": rule.metric,
        "threshold": str(rule.threshold),
        "window_seconds": rule.window_seconds,
        "value": str(alert.value),
        "evidence": alert.evidence,
    }
