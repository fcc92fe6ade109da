"""The pool of MCP sessions: lazy start, a dead server started again, a hung one dropped, HTTP with
its header from settings, and sessions closed when a process shuts down."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agents import runtime
from agents.mcp import pool
from agents.mcp.models import McpServer, McpTool
from agents.mcp.services import mcp_server_upsert, mcp_tool_risk_set, mcp_tools_list
from agents.mcp.tools import server_spec
from agents.models import Agent, Run, RunStatus, ToolCall, ToolCallStatus
from agents.tools import Risk, ToolContext, registry
from audit.models import AuditEvent
from tests.agents.mcp import servers
from tests.conftest import grant_tools
from tests.live import wait_until

pytestmark = pytest.mark.django_db

CONTEXT = ToolContext(idempotency_key="k")


def now(timezone: str = "UTC") -> dict:
    return registry["time.get_current_time"].run({"timezone": timezone}, CONTEXT)


def test_sessions_start_lazily_and_a_dead_server_is_started_again(time_server):
    pool.close_all()  # the listing opened one; start from none
    assert servers.server_processes("mcp-server-time") == []
    assert now()["timezone"] == "UTC"
    [first] = wait_until(lambda: servers.server_processes("mcp-server-time"), timeout=5, what="the server process")
    assert now("Asia/Tokyo")["timezone"] == "Asia/Tokyo"
    assert servers.server_processes("mcp-server-time") == [first]  # one session, reused
    starts = pool.pool().starts["time"]

    servers.kill(first)
    wait_until(lambda: first not in servers.server_processes("mcp-server-time"), timeout=5, what="the kill")
    assert now("Europe/Berlin")["timezone"] == "Europe/Berlin"
    assert pool.pool().starts["time"] == starts + 1
    [second] = servers.server_processes("mcp-server-time")
    assert second != first

    pool.close_all()  # what a worker process does when it shuts down
    wait_until(lambda: not servers.server_processes("mcp-server-time"), timeout=10, what="the server to stop")


def test_a_hung_server_hits_the_timeout_and_the_next_call_gets_a_new_one(sqlite_server, notes_db):
    sqlite_server.timeout_seconds = 1.0
    sqlite_server.save()
    spec = server_spec(sqlite_server)
    holder = sqlite3.connect(notes_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TimeoutError, match="did not answer within 1.0 s"):
            pool.call_tool(spec, "read_query", {"query": "SELECT count(*) AS n FROM notes"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    starts = pool.pool().starts["sqlite"]
    result = pool.call_tool(spec, "read_query", {"query": "SELECT count(*) AS n FROM notes"})
    assert not result.is_error and "'n': 0" in result.content[0].text
    assert pool.pool().starts["sqlite"] == starts + 1


@pytest.fixture
def http_server(tmp_path: Path):
    server = servers.HttpServer(tmp_path, token="notes-token-1234")
    yield server
    server.stop()


def http_row(http_server, setting: str = "MCP_NOTES_AUTHORIZATION") -> McpServer:
    server, _ = mcp_server_upsert(
        {"slug": "notes", "transport": "http", "url": http_server.url, "headers": {"Authorization": setting}},
        actor="tests",
    )
    return server


def test_streamable_http_with_a_bearer_token_from_settings(http_server, operator, settings):
    settings.MCP_NOTES_AUTHORIZATION = "Bearer notes-token-1234"
    server = http_row(http_server)
    listing = mcp_tools_list(server=server, actor="tests")
    assert listing.added == ["notes.add_note"]
    row = McpTool.objects.get(server=server, name="add_note")
    assert row.input_schema["required"] == ["text"] and row.output_schema is not None
    mcp_tool_risk_set(tool=row, risk=Risk.WRITE_REVERSIBLE, actor=operator)

    grant_tools(operator, ["notes.add_note"])
    agent = Agent.objects.create(
        slug="notes",
        name="notes",
        objective="t",
        scope="t",
        tools=["notes.add_note"],
        autonomy_level=4,
        playbook={
            "steps": [
                {"id": "add", "tool": "notes.add_note", "arguments": {"text": "hello"}},
                {"final": {"count": "{{steps.add.output.count}}"}},
            ]
        },
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"count": 1} and http_server.executed() == ["hello"]
    # The database and the audit log name the setting, never the token.
    assert McpServer.objects.get(pk=server.pk).headers == {"Authorization": "MCP_NOTES_AUTHORIZATION"}
    assert not any("notes-token-1234" in str(event.data) for event in AuditEvent.objects.all())


def test_http_with_a_wrong_or_missing_token_sends_nothing(http_server, settings):
    settings.MCP_NOTES_AUTHORIZATION = "Bearer wrong"
    server = http_row(http_server)
    with pytest.raises(pool.McpUnavailable):
        mcp_tools_list(server=server, actor="tests")
    missing = http_row(http_server, setting="MCP_NOTES_NOT_SET")
    with pytest.raises(pool.McpUnavailable, match="MCP_NOTES_NOT_SET is not set"):
        mcp_tools_list(server=missing, actor="tests")
    assert http_server.executed() == [] and not McpTool.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_runs_the_tool_and_closes_its_sessions_on_shutdown(celery_worker, operator):
    server, _ = mcp_server_upsert(
        {"slug": "time", "command": servers.time_command(), "args": ["--local-timezone", "UTC"]}, actor="tests"
    )
    mcp_tools_list(server=server, actor="tests")
    pool.close_all()
    mcp_tool_risk_set(tool=McpTool.objects.get(server=server, name="get_current_time"), risk=Risk.READ, actor="t")
    grant_tools(operator, ["time.get_current_time"])
    agent = Agent.objects.create(
        slug="clock",
        name="clock",
        objective="t",
        scope="t",
        tools=["time.get_current_time"],
        autonomy_level=2,
        playbook={
            "steps": [
                {"id": "now", "tool": "time.get_current_time", "arguments": {"timezone": "America/New_York"}},
                {"final": {"tz": "{{steps.now.output.timezone}}"}},
            ]
        },
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    wait_until(
        lambda: Run.objects.get(pk=run.pk).status in (RunStatus.SUCCEEDED, RunStatus.FAILED),
        timeout=60,
        what="the worker to finish the run",
    )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"tz": "America/New_York"}
    assert ToolCall.objects.get(run=run).status == ToolCallStatus.SUCCEEDED
    root = celery_worker.proc.pid
    started = servers.descendants(root, "mcp-server-time")
    assert started, "the worker's pool process started the server"
    celery_worker.restart()
    wait_until(
        lambda: not set(started) & set(servers.all_processes("mcp-server-time")),  # wherever they went
        timeout=20,
        what="the worker's server processes to stop",
    )


def test_a_server_that_cannot_start_fails_the_call_it_never_received(operator, tmp_path):
    from django.utils import timezone

    server, _ = mcp_server_upsert({"slug": "gone", "command": str(tmp_path / "no-such-server")}, actor="tests")
    from agents.mcp.services import mcp_tool_permission_ensure

    row = McpTool.objects.create(
        server=server,
        name="write",
        input_schema={"type": "object", "properties": {"x": {"type": "integer"}}},
        listed_at=timezone.now(),
    )
    mcp_tool_permission_ensure(row)  # as a listing made it once, before the server went away
    grant_tools(operator, ["gone.write"])
    agent = Agent.objects.create(
        slug="gone",
        name="gone",
        objective="t",
        scope="t",
        tools=["gone.write"],
        autonomy_level=4,
        playbook={"steps": [{"id": "w", "tool": "gone.write", "arguments": {"x": 1}}, {"final": {"done": True}}]},
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    runtime.run_advance(run_id=run.pk)
    call = ToolCall.objects.get(run=run)
    # Nothing was sent, so the outcome is known: failed, not unknown, and not retried.
    assert call.status == ToolCallStatus.FAILED and call.attempts == 1
    assert "could not start a session" in call.error
