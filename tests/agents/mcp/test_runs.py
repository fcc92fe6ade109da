"""Runs that call real MCP servers through the policy, the approval and the ledger."""

from __future__ import annotations

import sqlite3

import pytest
from guardian.shortcuts import assign_perm

from agents import runtime
from agents.mcp.models import McpTool
from agents.mcp.services import mcp_tool_risk_set
from agents.models import Agent, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.tools import Risk
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus
from audit.models import AuditEvent
from tests.agents.mcp.servers import notes
from tests.conftest import grant_tools

pytestmark = pytest.mark.django_db

INSERT = "INSERT INTO notes (body) VALUES ('{}')"


def agent_with(tools, steps, *, level=2, slug="mcp-agent"):
    return Agent.objects.create(
        slug=slug,
        name=slug,
        objective="t",
        scope="t",
        tools=list(tools),
        autonomy_level=level,
        playbook={"steps": steps},
    )


def advance(run: Run) -> Run:
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def notes_agent(operator, reviewer, body="proposed"):
    grant_tools(operator, ["sqlite.write_query"])
    agent = agent_with(
        ["sqlite.write_query"],
        [
            {"id": "write", "tool": "sqlite.write_query", "arguments": {"query": INSERT.format(body)}},
            {"final": {"write": "{{steps.write.status}}", "error": "{{steps.write.error}}"}},
        ],
    )
    assign_perm("review_agent", reviewer, agent)
    return agent


def test_a_read_tool_runs_at_level_2_once_the_operator_says_it_reads(time_server, operator):
    mcp_tool_risk_set(
        tool=McpTool.objects.get(server=time_server, name="get_current_time"), risk=Risk.READ, actor=operator
    )
    grant_tools(operator, ["time.get_current_time"])
    agent = agent_with(
        ["time.get_current_time"],
        [
            {"id": "now", "tool": "time.get_current_time", "arguments": {"timezone": "Europe/Paris"}},
            {"final": {"now": "{{steps.now.output}}"}},
        ],
    )
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result["now"]["timezone"] == "Europe/Paris" and "T" in run.result["now"]["datetime"]
    call = ToolCall.objects.get(run=run)
    assert call.status == ToolCallStatus.SUCCEEDED and call.verdict == "execute"
    assert not ApprovalRequest.objects.filter(run=run).exists()
    executed = AuditEvent.objects.get(action="agents.tool_call.executed", run_id=run.pk)
    assert executed.data["tool"] == "time.get_current_time" and executed.data["status"] == "succeeded"


def test_a_write_waits_for_approval_and_the_edited_arguments_run_exactly_once(
    sqlite_server, notes_db, operator, reviewer
):
    agent = notes_agent(operator, reviewer)
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    assert run.status == RunStatus.WAITING
    approval = ApprovalRequest.objects.get(run=run)
    assert approval.tool == "sqlite.write_query" and approval.risk_class == Risk.WRITE_IRREVERSIBLE
    assert notes(notes_db) == []  # nothing runs before a person decides

    approval_request_decide(
        approval=approval, reviewer=reviewer, verdict="edit", arguments={"query": INSERT.format("edited")}
    )
    run = advance(run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert notes(notes_db) == ["edited"]  # the approved arguments, once
    # A redelivered task and a second resume find nothing left to do.
    run = advance(run)
    runtime.run_advance(run_id=run.pk)
    assert notes(notes_db) == ["edited"]
    assert ToolCall.objects.get(run=run).attempts == 1


def test_arguments_changed_after_the_approval_are_refused(sqlite_server, notes_db, operator, reviewer):
    from agents.tools import arguments_hash

    agent = notes_agent(operator, reviewer)
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    call = ToolCall.objects.get(run=run)
    # Approved as proposed ...
    ToolCall.objects.filter(pk=call.pk).update(
        status=ToolCallStatus.APPROVED, approved_hash=arguments_hash(call.arguments)
    )
    # ... and changed behind the approval's back.
    ToolCall.objects.filter(pk=call.pk).update(arguments={"query": INSERT.format("tampered")})
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)
    advance(run)
    call.refresh_from_db()
    assert call.status == ToolCallStatus.FAILED and "differ from the approved" in call.error
    assert notes(notes_db) == []


def test_a_call_left_executing_by_a_crash_is_unknown_never_run_again(sqlite_server, notes_db, operator):
    from agents.reasoners.base import Action
    from agents.runtime import proposals
    from agents.tools import ToolContext, registry
    from audit.redaction import Redactor

    grant_tools(operator, ["sqlite.write_query"])
    steps = [{"id": "write", "tool": "sqlite.write_query", "arguments": {"query": INSERT.format("once")}}]
    agent = agent_with(["sqlite.write_query"], steps, level=4)
    run = runtime.run_create(agent=agent, user=operator, payload={})
    runtime.lease_take(run.pk)
    run.refresh_from_db()
    action = Action(
        kind="tool", tool="sqlite.write_query", arguments=steps[0]["arguments"], transcript={"playbook_step": "write"}
    )
    proposals.propose(run, agent, action, Redactor())
    call = ToolCall.objects.get(run=run)
    # The worker claimed the call, the server wrote the row, and the worker died before recording it.
    ToolCall.objects.filter(pk=call.pk).update(status=ToolCallStatus.EXECUTING, attempts=1)
    registry["sqlite.write_query"].run(call.arguments, ToolContext(idempotency_key=str(call.idempotency_key)))
    Run.objects.filter(pk=run.pk).update(lease_expires_at=None)
    assert notes(notes_db) == ["once"]

    run = advance(run)
    call.refresh_from_db()
    assert call.status == ToolCallStatus.UNKNOWN and "a person must reconcile" in call.error
    assert run.status == RunStatus.FAILED
    assert notes(notes_db) == ["once"]  # not a second time
    advance(run)
    assert notes(notes_db) == ["once"] and ToolCall.objects.get(pk=call.pk).attempts == 1


def test_a_call_that_times_out_after_sending_is_unknown_and_not_retried(
    sqlite_server, notes_db, operator, reviewer, settings
):
    settings.TOOL_RETRY_BASE_SECONDS = 0
    sqlite_server.timeout_seconds = 1.0
    sqlite_server.save()
    agent = notes_agent(operator, reviewer)
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    approval_request_decide(approval=ApprovalRequest.objects.get(run=run), reviewer=reviewer, verdict="approve")
    # Another writer holds the database: the server hangs on the write past the tool timeout.
    holder = sqlite3.connect(notes_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        run = advance(run)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    call = ToolCall.objects.get(run=run)
    assert call.status == ToolCallStatus.UNKNOWN, call.error
    assert "TimeoutError" in call.error and call.attempts == 1
    assert run.status == RunStatus.FAILED
    assert len(notes(notes_db)) <= 1  # at most the one hung attempt, never a retry
    advance(run)
    assert len(notes(notes_db)) <= 1 and ToolCall.objects.get(pk=call.pk).attempts == 1


def test_arguments_outside_the_input_schema_are_refused_before_any_call(sqlite_server, notes_db, operator):
    grant_tools(operator, ["sqlite.write_query"])
    agent = agent_with(
        ["sqlite.write_query"],
        [
            {"id": "bad", "tool": "sqlite.write_query", "arguments": {"query": 7}},
            {"id": "missing", "tool": "sqlite.write_query", "arguments": {"sql": INSERT.format("x")}},
            {"final": {"bad": "{{steps.bad.status}}", "missing": "{{steps.missing.status}}"}},
        ],
    )
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"bad": "invalid", "missing": "invalid"}
    errors = list(run.steps.filter(kind=Step.Kind.OBSERVATION).values_list("error", flat=True))
    assert "is not of type 'string'" in errors[0] and "'query' is a required property" in errors[1]
    assert not ToolCall.objects.exists() and notes(notes_db) == []


def test_an_edit_outside_the_input_schema_is_refused(sqlite_server, notes_db, operator, reviewer):
    from approvals.decisions import DecisionInvalid

    agent = notes_agent(operator, reviewer)
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    approval = ApprovalRequest.objects.get(run=run)
    with pytest.raises(DecisionInvalid):
        approval_request_decide(approval=approval, reviewer=reviewer, verdict="edit", arguments={"query": ["x"]})
    assert ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING


def test_a_result_outside_the_output_schema_and_an_error_result_are_failures(time_server, operator, settings):
    settings.TOOL_RETRY_BASE_SECONDS = 0
    row = McpTool.objects.get(server=time_server, name="get_current_time")
    mcp_tool_risk_set(tool=row, risk=Risk.READ, actor=operator)
    # The schema the operator accepted asks for a field this server does not return.
    schema = {**row.output_schema, "required": [*row.output_schema["required"], "week_number"]}
    McpTool.objects.filter(pk=row.pk).update(output_schema=schema)
    grant_tools(operator, ["time.get_current_time"])
    agent = agent_with(
        ["time.get_current_time"],
        [
            {"id": "odd", "tool": "time.get_current_time", "arguments": {"timezone": "UTC"}},
            {"id": "mars", "tool": "time.get_current_time", "arguments": {"timezone": "Mars/Olympus_Mons"}},
            {"final": {"odd": "{{steps.odd.status}}", "mars": "{{steps.mars.status}}"}},
        ],
        level=4,
    )
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"odd": "failed", "mars": "failed"}
    odd, mars = ToolCall.objects.filter(run=run).order_by("step")
    assert "outside its output schema" in odd.error and "week_number" in odd.error
    assert "reported an error" in mars.error and "Mars/Olympus_Mons" in mars.error


def test_a_business_rule_on_an_mcp_tool_blocks_at_every_level(sqlite_server, notes_db, operator):
    from approvals.models import BusinessRule
    from approvals.rules import rule_errors

    assert rule_errors(tool="sqlite.write_query", field="query", operator="matches", value="x") == {}
    assert (
        "no argument" in rule_errors(tool="sqlite.write_query", field="sql", operator="matches", value="x")["field"][0]
    )
    BusinessRule.objects.create(
        tool="sqlite.write_query", field="query", operator="matches", value=r"(?i)\bdrop\b", effect="block"
    )
    grant_tools(operator, ["sqlite.write_query"])
    agent = agent_with(
        ["sqlite.write_query"],
        [
            {"id": "drop", "tool": "sqlite.write_query", "arguments": {"query": "DROP TABLE notes"}},
            {"final": {"drop": "{{steps.drop.status}}"}},
        ],
        level=4,
    )
    run = advance(runtime.run_create(agent=agent, user=operator, payload={}))
    assert run.result == {"drop": "blocked"}, run.error
    assert notes(notes_db) == []  # the table is still there
