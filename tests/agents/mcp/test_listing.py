"""Listing tools from real MCP servers: stored with their schemas, annotations shown, no risk yet."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from agents.mcp.models import McpTool
from agents.mcp.services import mcp_tool_risk_set
from agents.models import Agent
from agents.tools import Risk, registry
from approvals.models import Verdict
from approvals.policy import RunContext, checkpoint_verdict
from audit.models import AuditEvent
from tests.conftest import grant_tools

pytestmark = pytest.mark.django_db


def test_time_server_tools_are_listed_with_schemas_and_annotations_and_no_risk(time_server):
    tools = {tool.name: tool for tool in McpTool.objects.filter(server=time_server)}
    assert set(tools) == {"get_current_time", "convert_time"}
    now = tools["get_current_time"]
    assert now.input_schema["required"] == ["timezone"]
    assert set(now.output_schema["required"]) == {"timezone", "datetime", "day_of_week", "is_dst"}
    assert now.annotations["read_only_hint"] is True and now.annotations["destructive_hint"] is False
    assert now.risk is None
    tool = registry["time.get_current_time"]
    assert tool.risk == Risk.WRITE_IRREVERSIBLE  # the server says read-only; only the operator may
    assert not tool.low_risk and not tool.idempotent
    assert "time.get_current_time" in registry and "time.no_such_tool" not in registry
    listed = AuditEvent.objects.get(action="agents.mcp_server.tools_listed")
    assert sorted(listed.data["added"]) == ["time.convert_time", "time.get_current_time"]


def test_sqlite_server_tools_are_listed(sqlite_server):
    names = set(McpTool.objects.filter(server=sqlite_server).values_list("name", flat=True))
    assert {"read_query", "write_query", "create_table", "list_tables"} <= names
    write = registry["sqlite.write_query"]
    assert write.input_schema()["required"] == ["query"]
    assert write.risk == Risk.WRITE_IRREVERSIBLE


def test_annotations_never_lower_the_risk_only_the_operator_does(time_server, operator):
    grant_tools(operator, ["time.get_current_time"])
    agent = Agent.objects.create(
        slug="clock", name="clock", objective="t", scope="t", tools=["time.get_current_time"], autonomy_level=2
    )
    context = RunContext(starter=operator)

    def verdict() -> str:
        tool = registry["time.get_current_time"]
        return checkpoint_verdict(agent=agent, tool=tool, arguments={"timezone": "UTC"}, context=context).verdict

    # readOnlyHint is true, yet an unset risk is write_irreversible: at level 2 it waits like any
    # irreversible write, where a read-only tool would run.
    agent.autonomy_level = 2
    assert verdict() == Verdict.REQUIRE_APPROVAL
    tool_row = McpTool.objects.get(server=time_server, name="get_current_time")
    assert mcp_tool_risk_set(tool=tool_row, risk=Risk.READ, actor=operator, reason="it only reads the clock")
    assert verdict() == Verdict.EXECUTE
    event = AuditEvent.objects.get(action="agents.mcp_tool.risk_changed")
    assert event.data["old"] is None and event.data["new"] == "read"
    assert event.data["annotations"]["read_only_hint"] is True


def test_a_tool_whose_schema_changed_loses_its_risk(time_server, operator):
    row = McpTool.objects.get(server=time_server, name="get_current_time")
    mcp_tool_risk_set(tool=row, risk=Risk.READ, actor=operator)
    McpTool.objects.filter(pk=row.pk).update(input_schema={"type": "object"})  # as an older listing had it
    call_command("mcp_sync", "time")
    row.refresh_from_db()
    assert row.risk is None and row.input_schema["required"] == ["timezone"]
    assert registry["time.get_current_time"].risk == Risk.WRITE_IRREVERSIBLE


def test_unknown_tool_names_are_refused_by_the_agent(time_server):
    agent = Agent(slug="x", name="x", objective="t", scope="t", tools=["time.get_current_time", "time.nope"])
    with pytest.raises(Exception, match="Unknown tools: time.nope"):
        agent.full_clean()
