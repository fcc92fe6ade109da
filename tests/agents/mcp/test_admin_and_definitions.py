"""Operators register MCP servers in the admin and in agent definition files; the demo has one."""

from __future__ import annotations

import io

import pytest
import yaml
from django.contrib.auth.models import Group, Permission, User
from django.core.management import CommandError, call_command

from agents import runtime
from agents.mcp.models import McpServer, McpTool
from agents.models import Agent, RunStatus
from agents.tools import Risk, registry
from audit.models import AuditEvent
from tests.agents.mcp import servers
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_operator(db) -> User:
    import importlib

    # The grant is migration data; a transactional test run earlier may have flushed it.
    granted = importlib.import_module("agents.migrations.0010_mcp").OPERATOR_PERMISSIONS
    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.add(*Permission.objects.filter(content_type__app_label="agents", codename__in=granted))
    user = make_user("ops", "operators")
    user.is_staff = True
    user.save()
    return user


def test_operator_registers_a_server_lists_its_tools_and_sets_a_risk_in_the_admin(client, admin_operator):
    client.force_login(admin_operator)
    response = client.post(
        "/admin/agents/mcpserver/add/",
        {
            "slug": "time",
            "transport": "stdio",
            "command": servers.time_command(),
            "args": '["--local-timezone", "UTC"]',
            "env": "{}",
            "url": "",
            "headers": "{}",
            "enabled": "on",
            "timeout_seconds": "10",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    server = McpServer.objects.get(slug="time")
    assert AuditEvent.objects.filter(action="agents.mcp_server.created", actor_repr="ops").count() == 1

    response = client.post(
        "/admin/agents/mcpserver/", {"action": "list_tools", "_selected_action": [server.pk]}, follow=True
    )
    shown = [str(message) for message in response.context["messages"]]
    assert "time: 2 added, 0 changed (risk to set again), 0 gone, 0 unchanged." in shown
    row = McpTool.objects.get(server=server, name="get_current_time")
    assert row.risk is None

    page = client.get(f"/admin/agents/mcptool/{row.pk}/change/").content.decode()
    assert "read_only_hint" in page and "not set" not in page  # the hints shown read-only
    response = client.post(
        f"/admin/agents/mcptool/{row.pk}/change/", {"risk": "read", "change_reason": "reads the clock"}
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.risk == Risk.READ and registry["time.get_current_time"].risk == Risk.READ
    event = AuditEvent.objects.get(action="agents.mcp_tool.risk_changed")
    assert (event.actor_repr, event.data["old"], event.data["new"], event.data["reason"]) == (
        "ops",
        None,
        "read",
        "reads the clock",
    )
    listing = client.get("/admin/agents/mcptool/").content.decode()
    assert "not set (write_irreversible)" in listing  # convert_time, still unset


def test_a_header_holding_a_value_instead_of_a_setting_name_is_refused(client, admin_operator):
    client.force_login(admin_operator)
    response = client.post(
        "/admin/agents/mcpserver/add/",
        {
            "slug": "remote",
            "transport": "http",
            "command": "",
            "args": "[]",
            "env": "{}",
            "url": "http://127.0.0.1:9/mcp",
            "headers": '{"Authorization": "Bearer sk-live-123"}',
            "enabled": "on",
            "timeout_seconds": "10",
        },
    )
    assert response.status_code == 200
    assert "the name of a setting, never the value" in response.content.decode()
    assert not McpServer.objects.exists()


def test_load_agents_registers_servers_lists_tools_sets_risks_and_the_agent(tmp_path, operator):
    path = tmp_path / "agents.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "mcp_servers": [
                    {
                        "slug": "time",
                        "command": servers.time_command(),
                        "args": ["--local-timezone", "UTC"],
                        "risks": {"get_current_time": "read"},
                    }
                ],
                "agents": [
                    {
                        "slug": "clock",
                        "name": "Clock",
                        "objective": "o",
                        "scope": "s",
                        "tools": ["time.get_current_time"],
                        "playbook": {
                            "steps": [
                                {"id": "n", "tool": "time.get_current_time", "arguments": {"timezone": "UTC"}},
                                {"final": {"tz": "{{steps.n.output.timezone}}"}},
                            ]
                        },
                    }
                ],
            }
        )
    )
    out = io.StringIO()
    call_command("load_agents", str(path), stdout=out)
    assert "created MCP server time: 2 tool(s), 2 new, 1 risk(s) set" in out.getvalue()
    assert Agent.objects.get(slug="clock").tools == ["time.get_current_time"]
    assert McpTool.objects.get(name="get_current_time").risk == Risk.READ
    assert McpTool.objects.get(name="convert_time").risk is None


def test_load_agents_refuses_an_unknown_risk_and_changes_nothing(tmp_path):
    path = tmp_path / "agents.yaml"
    server = {"slug": "time", "command": servers.time_command(), "risks": {"get_current_time": "harmless"}}
    agent = {"slug": "clock", "name": "c", "objective": "o", "scope": "s", "tools": ["time.get_current_time"]}
    path.write_text(yaml.safe_dump([{**agent, "mcp_servers": [server]}]))
    with pytest.raises(CommandError, match="risk"):
        call_command("load_agents", str(path))
    assert not McpServer.objects.exists() and not Agent.objects.exists()


def test_the_demo_clock_agent_tells_the_time_offline():
    call_command("seed_demo", force=True, stdout=io.StringIO())
    call_command("seed_demo", force=True, stdout=io.StringIO())  # again: nothing is duplicated
    assert McpServer.objects.count() == 1
    operator = User.objects.get(username="operator")
    assert operator.has_perm("agents.use_time.get_current_time")
    agent = Agent.objects.get(slug="clock")
    run = runtime.run_create(agent=agent, user=operator, payload={"timezone": "Europe/Lisbon"})
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result["now"]["timezone"] == "Europe/Lisbon"
