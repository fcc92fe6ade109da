"""The agent admin: a kill switch pulled there stops runs like the console's."""

from __future__ import annotations

import pytest

from agents import runtime
from agents.models import Agent, Run, RunStatus, Ticket
from approvals.models import ApprovalRequest, ApprovalStatus, BusinessRule
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_disabling_an_agent_in_the_admin_cancels_its_waiting_runs(client, support_agent, starter, operator):
    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=support_agent,
        user=starter,
        payload={"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": 120, "currency": "USD"},
    )
    runtime.run_advance(run_id=run.pk)
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING
    operator.is_superuser = True
    operator.is_staff = True
    operator.save()
    client.force_login(operator)
    url = f"/admin/agents/agent/{support_agent.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    for name, value in list(data.items()):
        if isinstance(value, list | dict):
            import json

            data[name] = json.dumps(value)
    data.update(enabled="", change_reason="refunds look wrong")
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    assert not Agent.objects.get(pk=support_agent.pk).enabled
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert ApprovalRequest.objects.get(run=run).status == ApprovalStatus.CANCELLED
    assert AuditEvent.objects.filter(action="agents.agent.kill_switch").count() == 1


def test_operators_edit_agents_and_rules_in_the_admin(client, support_agent):
    import importlib

    from django.contrib.auth.models import Group, Permission

    from tests.conftest import make_user

    # The grant is migration data; a transactional test run earlier may have flushed it.
    granted = importlib.import_module("agents.migrations.0004_operator_permissions").OPERATOR_PERMISSIONS
    operators, _ = Group.objects.get_or_create(name="operators")
    for label, codenames in granted.items():
        operators.permissions.add(*Permission.objects.filter(content_type__app_label=label, codename__in=codenames))

    operator = make_user("ops", "operators")
    operator.is_staff = True
    operator.save()
    client.force_login(operator)
    change = client.get(f"/admin/agents/agent/{support_agent.pk}/change/")
    assert change.status_code == 200
    # An edit form, not the read-only view: the audited fields are there to change.
    assert change.context["has_change_permission"] is True
    assert {"autonomy_level", "enabled", "tools"} <= set(change.context["adminform"].form.fields)
    assert client.get("/admin/approvals/businessrule/add/").status_code == 200
    response = client.post(
        "/admin/approvals/businessrule/add/",
        {
            "agent": support_agent.pk,
            "tool": "issue_refund",
            "field": "amount",
            "operator": ">",
            "value": "500",
            "effect": "require_two_approvals",
            "note": "big refunds",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    rule = BusinessRule.objects.get(note="big refunds")
    assert (rule.agent, rule.tool, rule.field, rule.operator, rule.value) == (
        support_agent,
        "issue_refund",
        "amount",
        ">",
        500,
    )
    [created] = AuditEvent.objects.filter(action="approvals.rule.created", target_id=str(rule.pk))
    assert created.actor_id == str(operator.pk) and created.data["new"]["effect"] == "require_two_approvals"
    assert created.data["reason"] == "changed in admin"
    log = client.get("/admin/audit/auditevent/")
    assert log.status_code == 403  # the audit log is for auditors
    assert b"approvals.rule.created" not in log.content


def test_object_permission_pages_are_for_superusers_only(client, support_agent, outsider):
    from tests.conftest import make_user

    operator = make_user("ops", "operators")
    operator.is_staff = True
    operator.save()
    client.force_login(operator)
    url = f"/admin/agents/agent/{support_agent.pk}/permissions/"
    assert client.get(url).status_code == 403
    response = client.post(url, {"user": outsider.username, "submit_manage_user": "submit"})
    assert response.status_code == 403
    assert not outsider.has_perm("agents.review_agent", support_agent)
    operator.is_superuser = True
    operator.save()
    page = client.get(url)
    assert page.status_code == 200
    assert page.context["object"] == support_agent and "user_form" in page.context  # guardian's page itself


def test_a_definition_that_disables_an_agent_stops_its_runs(tmp_path, support_agent, starter):
    import json

    from django.core.management import call_command

    from agents.demo.data import SUPPORT_AGENT

    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=support_agent,
        user=starter,
        payload={"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": 120, "currency": "USD"},
    )
    runtime.run_advance(run_id=run.pk)
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({**SUPPORT_AGENT, "enabled": False}))
    call_command("load_agents", str(path))
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert ApprovalRequest.objects.get(run=run).status == ApprovalStatus.CANCELLED


def test_admin_level_changes_go_through_the_operator_service(client, support_agent, operator):
    """The admin, the console and the API audit a level change with one payload shape."""
    import json

    operator.is_superuser = operator.is_staff = True
    operator.save()
    client.force_login(operator)
    url = f"/admin/agents/agent/{support_agent.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data = {name: json.dumps(value) if isinstance(value, list | dict) else value for name, value in data.items()}
    data.update(
        autonomy_level="3",
        tool_levels=json.dumps({"update_ticket": 4}),
        enabled="on",
        change_reason="trusted after review",
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    agent = Agent.objects.get(pk=support_agent.pk)
    assert agent.autonomy_level == 3 and agent.tool_levels == {"update_ticket": 4}
    changes = [
        event.data
        for event in AuditEvent.objects.filter(action="agents.agent.level_changed", target_id=str(agent.pk)).order_by(
            "id"
        )
    ]
    assert changes == [
        {"tool": None, "old": 2, "new": 3, "reason": "trusted after review"},
        {"tool": "update_ticket", "old": 3, "new": 4, "reason": "trusted after review"},
    ]
    assert not AuditEvent.objects.filter(action="agents.agent.kill_switch").exists()  # unchanged: nothing audited
