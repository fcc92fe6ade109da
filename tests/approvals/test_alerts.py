"""Alert rules: each metric, fire once and resolve once, concurrent evaluators, the signed webhook,
the banner and the beat schedule."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm

from agents.models import Agent, Run, RunStatus, Step, ToolCall, ToolCallStatus
from approvals.alerts import alerts_evaluate
from approvals.models import Alert, AlertMetric, AlertRule, AlertStatus, WebhookDelivery
from approvals.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from audit.models import AuditEvent
from config import doorbell
from tests.approvals.test_webhooks import Receiver
from tests.conftest import make_user
from tests.live import wait_until
from tests.pages import client_for, waiting_refund

pytestmark = pytest.mark.django_db

SECRET = "whsec-alerts-5678"


@pytest.fixture
def other_agent(db) -> Agent:
    return Agent.objects.create(slug="billing", name="Billing agent", objective="Bills.", scope="Bills only.")


def rule_for(metric: str, threshold: str, *, agent: Agent | None, window: int = 600, **fields) -> AlertRule:
    return AlertRule.objects.create(
        name=f"{metric} rule", metric=metric, agent=agent, window_seconds=window, threshold=Decimal(threshold), **fields
    )


def run_of(agent: Agent, *, step_count: int = 0, created: datetime | None = None) -> Run:
    run = Run.objects.create(agent=agent, status=RunStatus.SUCCEEDED, step_count=step_count)
    if created is not None:
        Run.objects.filter(pk=run.pk).update(created_at=created)
    return run


def calls(agent: Agent, *, succeeded: int = 0, failed: int = 0, unknown: int = 0, at: datetime | None = None) -> None:
    run = run_of(agent)
    statuses = [ToolCallStatus.SUCCEEDED] * succeeded + [ToolCallStatus.FAILED] * failed
    statuses += [ToolCallStatus.UNKNOWN] * unknown
    for index, status in enumerate(statuses):
        call = ToolCall.objects.create(run=run, step=index, tool="lookup_order", arguments_hash="x", status=status)
        if at is not None:
            ToolCall.objects.filter(pk=call.pk).update(updated_at=at)


def firing(rule: AlertRule) -> list[Alert]:
    return list(Alert.objects.filter(rule=rule, status=AlertStatus.FIRING))


# --- Each metric: holds, and does not ----------------------------------------------------------


def test_tool_error_rate(support_agent, other_agent):
    rule = rule_for(AlertMetric.TOOL_ERROR_RATE, "20", agent=support_agent)
    calls(support_agent, succeeded=4, failed=1)  # 20 %: not above
    calls(other_agent, failed=5)  # another agent's errors do not count
    calls(support_agent, failed=5, at=timezone.now() - timedelta(hours=1))  # before the window
    assert alerts_evaluate() == {"fired": 0, "resolved": 0} and not firing(rule)
    calls(support_agent, unknown=1)  # 2 of 6 ended badly: 33.33 %
    assert alerts_evaluate()["fired"] == 1
    [alert] = firing(rule)
    assert alert.value == Decimal("33.33") and alert.evidence == {"finished_calls": 6, "failed_calls": 2}


def test_tool_error_rate_of_every_agent(support_agent, other_agent):
    rule = rule_for(AlertMetric.TOOL_ERROR_RATE, "20", agent=None)
    calls(support_agent, succeeded=5)
    assert alerts_evaluate()["fired"] == 0
    calls(other_agent, failed=5)
    assert alerts_evaluate()["fired"] == 1 and firing(rule)[0].value == Decimal("50.00")


def test_cost_per_hour(support_agent, other_agent):
    rule = rule_for(AlertMetric.COST_PER_HOUR, "2", agent=support_agent, window=600)
    run = run_of(support_agent)
    Step.objects.create(run=run, index=0, kind=Step.Kind.REASONING, cost=Decimal("0.30"))
    old = Step.objects.create(run=run, index=1, kind=Step.Kind.REASONING, cost=Decimal("9"))
    Step.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    Step.objects.create(run=run_of(other_agent), index=0, kind=Step.Kind.REASONING, cost=Decimal("9"))
    assert alerts_evaluate()["fired"] == 0  # 0.30 in 10 minutes: 1.80 an hour
    Step.objects.create(run=run, index=2, kind=Step.Kind.REASONING, cost=Decimal("0.10"))
    assert alerts_evaluate()["fired"] == 1  # 0.40 in 10 minutes: 2.40 an hour
    [alert] = firing(rule)
    assert alert.value == Decimal("2.4") and alert.evidence == {"window_cost": "0.400000"}


def test_approvals_over_sla(support_agent, starter):
    rule = rule_for(AlertMetric.APPROVALS_OVER_SLA, "0", agent=support_agent)
    approval = waiting_refund(support_agent, starter)
    assert alerts_evaluate()["fired"] == 0  # pending, but within its SLA
    later = timezone.now() + timedelta(seconds=support_agent.approval_sla_seconds + 1)
    assert alerts_evaluate(now=later)["fired"] == 1
    [alert] = firing(rule)
    assert alert.value == 1 and alert.evidence == {"approval_ids": [approval.pk]}


def test_steps_per_run(support_agent, other_agent):
    rule = rule_for(AlertMetric.STEPS_PER_RUN, "25", agent=support_agent)
    run_of(support_agent, step_count=25)
    run_of(support_agent, step_count=90, created=timezone.now() - timedelta(hours=1))  # before the window
    run_of(other_agent, step_count=90)
    assert alerts_evaluate()["fired"] == 0
    long = run_of(support_agent, step_count=26)
    assert alerts_evaluate()["fired"] == 1
    [alert] = firing(rule)
    assert alert.value == 26 and alert.evidence == {"run_ids": [long.pk]}


def test_rubber_stamp_fires_for_a_scripted_fast_reviewer_of_the_rules_agent(
    support_agent, starter, assigned_reviewer, other_reviewer
):
    """The alert counts the reviewers the rubber-stamp signal flags on the rule's agent over
    its window: a careful reviewer does not make it fire, a fast one does."""
    from tests.approvals.test_analytics import START, careful_reviewer_script, fast_reviewer_script

    assign_perm("review_agent", other_reviewer, support_agent)
    window = int((timezone.now() - START).total_seconds()) + 3600
    rule = rule_for(AlertMetric.RUBBER_STAMP, "0", agent=support_agent, window=window)
    careful_reviewer_script(support_agent, starter, other_reviewer, 25)
    assert alerts_evaluate()["fired"] == 0
    fast_reviewer_script(support_agent, starter, assigned_reviewer, 25)
    assert alerts_evaluate()["fired"] == 1
    [alert] = firing(rule)
    assert alert.value == 1
    assert alert.evidence == {"reviewers": [{"reviewer": "reviewer", "agent": "support", "decisions": 25}]}


# --- Fire once, resolve once ------------------------------------------------------------------


def test_fires_once_while_it_holds_resolves_once_and_fires_again_as_a_new_alert(support_agent):
    rule = rule_for(
        AlertMetric.TOOL_ERROR_RATE,
        "20",
        agent=support_agent,
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret=SECRET,
    )
    calls(support_agent, succeeded=1, failed=1)
    now = timezone.now()
    for _ in range(3):
        alerts_evaluate(now=now)
    calls(support_agent, failed=2)  # still holding, at a new value
    assert alerts_evaluate(now=now) == {"fired": 0, "resolved": 0}
    [alert] = Alert.objects.all()
    assert alert.status == AlertStatus.FIRING and alert.value == Decimal("75.00")
    assert AuditEvent.objects.filter(action="approvals.alert.fired").count() == 1
    assert list(WebhookDelivery.objects.values_list("event", "alert_id")) == [("alert.fired", alert.pk)]

    cleared = now + timedelta(seconds=rule.window_seconds + 1)  # every failure aged out of the window
    assert alerts_evaluate(now=cleared) == {"fired": 0, "resolved": 1}
    assert alerts_evaluate(now=cleared) == {"fired": 0, "resolved": 0}
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED and alert.resolved_at == cleared
    [resolved] = AuditEvent.objects.filter(action="approvals.alert.resolved")
    assert resolved.target_id == str(alert.pk) and resolved.agent_slug == "support"
    assert resolved.data["rule"] == rule.name and resolved.data["value"] == "0.0000"
    assert [e for (e,) in WebhookDelivery.objects.order_by("pk").values_list("event")] == [
        "alert.fired",
        "alert.resolved",
    ]

    calls(support_agent, failed=1)
    assert alerts_evaluate()["fired"] == 1
    assert Alert.objects.count() == 2 and len(firing(rule)) == 1 and firing(rule)[0].pk != alert.pk
    assert AuditEvent.objects.filter(action="approvals.alert.fired").count() == 2


def test_a_disabled_rule_resolves_its_alert_and_fires_no_more(support_agent):
    rule = rule_for(AlertMetric.STEPS_PER_RUN, "5", agent=support_agent)
    run_of(support_agent, step_count=9)
    assert alerts_evaluate()["fired"] == 1
    AlertRule.objects.filter(pk=rule.pk).update(enabled=False)
    assert alerts_evaluate() == {"fired": 0, "resolved": 1}
    assert alerts_evaluate() == {"fired": 0, "resolved": 0}
    [alert] = Alert.objects.all()
    assert alert.status == AlertStatus.RESOLVED and alert.evidence["reason"] == "rule disabled"


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluations_fire_once(support_agent, monkeypatch):
    rung: list[int] = []
    monkeypatch.setattr(doorbell, "send", lambda name, *args, **kwargs: rung.append(args[0]) or True)
    rule_for(
        AlertMetric.STEPS_PER_RUN, "5", agent=support_agent, webhook_url="http://127.0.0.1:9/h", webhook_secret="s"
    )
    run_of(support_agent, step_count=9)
    threads_count = 4
    barrier = threading.Barrier(threads_count)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            barrier.wait()
            results.append(alerts_evaluate())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(results) == threads_count
    assert sorted(result["fired"] for result in results) == [0] * (threads_count - 1) + [1]
    assert Alert.objects.count() == 1
    assert AuditEvent.objects.filter(action="approvals.alert.fired").count() == 1
    [delivery] = WebhookDelivery.objects.all()
    assert rung == [delivery.pk]


# --- The signed webhook, delivered by the worker ----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_webhook_reaches_a_receiver_signed(support_agent, celery_worker):
    receiver = Receiver()
    try:
        rule = rule_for(
            AlertMetric.STEPS_PER_RUN, "5", agent=support_agent, webhook_url=receiver.url, webhook_secret=SECRET
        )
        run = run_of(support_agent, step_count=9)
        alerts_evaluate()
        wait_until(lambda: len(receiver.received) == 1, timeout=30, what="the alert.fired webhook")
        Run.objects.filter(pk=run.pk).update(step_count=2)
        alerts_evaluate()
        wait_until(lambda: len(receiver.received) == 2, timeout=30, what="the alert.resolved webhook")
    finally:
        receiver.close()
    alert = Alert.objects.get()
    payloads = []
    for headers, body in receiver.received:
        signature, timestamp = headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]
        assert verify(secret=SECRET, timestamp=timestamp, body=body, signature=signature)
        assert not verify(secret="wrong", timestamp=timestamp, body=body, signature=signature)
        payloads.append(json.loads(body))
    assert [p["event"] for p in payloads] == ["alert.fired", "alert.resolved"]
    fired = payloads[0]
    assert fired["alert"]["id"] == alert.pk and fired["alert"]["status"] == "firing"
    assert fired["alert"]["value"] == "9.0000" and fired["alert"]["evidence"] == {"run_ids": [run.pk]}
    assert fired["alert"]["rule"] == {
        "id": rule.pk,
        "name": rule.name,
        "metric": "steps_per_run",
        "agent": "support",
        "window_seconds": 600,
        "comparison": "above",
        "threshold": "5.0000",
    }
    assert fired["text"].startswith("[support] alert 'steps_per_run rule' fired")
    assert payloads[1]["alert"]["status"] == "resolved" and payloads[1]["alert"]["resolved_at"]
    assert WebhookDelivery.objects.filter(delivered_at__isnull=False, status_code=200).count() == 2


# --- The banner -------------------------------------------------------------------------------


def test_the_banner_shows_to_reviewers_of_the_agent_and_operators_only(
    support_agent, other_agent, assigned_reviewer, other_reviewer, operator
):
    assign_perm("review_agent", other_reviewer, other_agent)
    AlertRule.objects.create(
        name="<script>alert(1)</script> errors",
        metric=AlertMetric.STEPS_PER_RUN,
        agent=support_agent,
        threshold=Decimal("5"),
    )
    run_of(support_agent, step_count=9)
    assert "alert-banner" not in client_for(assigned_reviewer).get("/inbox/").text
    alerts_evaluate()

    page = client_for(assigned_reviewer).get("/inbox/").text
    assert 'id="alert-banner"' in page and "&lt;script&gt;alert(1)&lt;/script&gt; errors" in page
    assert "<script>alert(1)" not in page and "most steps in one run is 9" in page
    assert 'id="alert-banner"' not in client_for(other_reviewer).get("/inbox/").text
    assert 'id="alert-banner"' in client_for(operator).get("/console/").text


def test_an_alert_of_every_agent_is_the_operators(support_agent, assigned_reviewer, operator):
    rule_for(AlertMetric.STEPS_PER_RUN, "5", agent=None)
    run_of(support_agent, step_count=9)
    alerts_evaluate()
    assert 'id="alert-banner"' not in client_for(assigned_reviewer).get("/inbox/").text
    assert 'id="alert-banner"' in client_for(operator).get("/inbox/").text


def test_the_banner_costs_one_query_and_none_when_signed_out(support_agent, assigned_reviewer):
    rule_for(AlertMetric.STEPS_PER_RUN, "5", agent=support_agent)
    run_of(support_agent, step_count=9)
    alerts_evaluate()
    client = client_for(assigned_reviewer)
    client.get("/inbox/")
    with CaptureQueriesContext(connection) as queries:
        assert 'id="alert-banner"' in client.get("/inbox/").text
    assert len([q for q in queries if '"approvals_alert"' in q["sql"]]) == 1
    with CaptureQueriesContext(connection) as anonymous:
        assert Client().get("/accounts/login/").status_code == 200
    assert not [q for q in anonymous if '"approvals_alert"' in q["sql"]]


def test_the_console_lists_the_rules_with_their_state(support_agent, operator):
    quiet = rule_for(AlertMetric.COST_PER_HOUR, "100", agent=None)
    loud = rule_for(AlertMetric.STEPS_PER_RUN, "5", agent=support_agent)
    run_of(support_agent, step_count=9)
    alerts_evaluate()
    page = client_for(operator).get("/console/").text
    quiet_row = page.split(f'data-alert-rule="{quiet.pk}"')[1].split("</tr>")[0]
    loud_row = page.split(f'data-alert-rule="{loud.pk}"')[1].split("</tr>")[0]
    assert ">ok<" in quiet_row and "every agent" in quiet_row
    assert "firing</strong> at 9" in loud_row and "Support" in loud_row


# --- Rules in the admin -----------------------------------------------------------------------


def test_operators_manage_rules_in_the_admin_audited(support_agent):
    staff_operator = make_user("staff_operator", "operators", is_staff=True)
    staff_reviewer = make_user("staff_reviewer", "reviewers", is_staff=True)
    form = {
        "name": "Refund errors",
        "metric": "tool_error_rate",
        "agent": str(support_agent.pk),
        "window_seconds": "600",
        "threshold": "20",
        "comparison": "above",
        "webhook_url": "https://hooks.example.com/x",
        "webhook_secret": "",
        "enabled": "on",
    }
    assert client_for(staff_reviewer).post("/admin/approvals/alertrule/add/", form).status_code == 403
    client = client_for(staff_operator)
    refused = client.post("/admin/approvals/alertrule/add/", form)
    assert refused.status_code == 200 and "needs a secret" in refused.text and not AlertRule.objects.exists()
    saved = client.post("/admin/approvals/alertrule/add/", {**form, "webhook_secret": SECRET})
    assert saved.status_code == 302
    rule = AlertRule.objects.get()
    assert rule.created_by == staff_operator and rule.threshold == 20
    [event] = AuditEvent.objects.filter(action="approvals.alert_rule.created")
    assert event.actor_repr == "staff_operator" and event.data["new"]["webhook_signed"] is True
    assert SECRET not in json.dumps(event.data)


# --- The periodic task ------------------------------------------------------------------------


def test_the_evaluation_is_on_the_beat_schedule(support_agent):
    from approvals.tasks import evaluate_alerts
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["alerts"]
    assert entry["task"] == "approvals.tasks.evaluate_alerts" == evaluate_alerts.name
    assert entry["schedule"] == settings.ALERTS_INTERVAL_SECONDS == 60
    assert entry["options"]["expires"] == entry["schedule"]
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    rule_for(AlertMetric.STEPS_PER_RUN, "5", agent=support_agent)
    run_of(support_agent, step_count=9)
    assert evaluate_alerts.apply().get() == {"fired": 1, "resolved": 0}


# --- GET /api/v1/alerts/ ----------------------------------------------------------------------


def test_operators_list_the_alerts_over_the_api(support_agent, operator, assigned_reviewer):
    from rest_framework.test import APIClient

    rule = rule_for(AlertMetric.STEPS_PER_RUN, "5", agent=support_agent)
    run = run_of(support_agent, step_count=9)
    alerts_evaluate()
    Run.objects.filter(pk=run.pk).update(step_count=1)
    alerts_evaluate()
    Run.objects.filter(pk=run.pk).update(step_count=7)
    alerts_evaluate()
    api = APIClient()
    api.force_authenticate(operator)
    listed = api.get("/api/v1/alerts/").json()
    assert [a["status"] for a in listed["results"]] == ["firing", "resolved"]
    [current] = api.get("/api/v1/alerts/?status=firing").json()["results"]
    assert current["value"] == "7.0000" and current["rule"]["id"] == rule.pk and current["rule"]["agent"] == "support"
    assert current["evidence"] == {"run_ids": [run.pk]}
    for bad in ("status=burning", "status=", "page=x", "page=9"):
        response = api.get(f"/api/v1/alerts/?{bad}")
        assert response.status_code in (400, 404) and response.json()["detail"], bad
    reviewer_api = APIClient()
    reviewer_api.force_authenticate(assigned_reviewer)
    assert reviewer_api.get("/api/v1/alerts/").status_code == 403
    assert APIClient().get("/api/v1/alerts/").status_code == 401
