"""What one step of the run loop costs the database, and the shortcuts that keep it low: the
proposal's transaction claims a read, the claim checks the step boundary, the history is read
step by step."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import runtime
from agents.models import Agent, Run, RunStatus, Step, ToolCall, ToolCallStatus
from agents.reasoners.base import Action
from agents.runtime import proposals
from agents.runtime.ledger import tool_call_claim
from agents.runtime.steps import Trace, run_view
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest
from audit.redaction import Redactor
from tests.conftest import grant_tools

pytestmark = pytest.mark.django_db

# One step of a run that reads (reason, check, record, claim, execute, record), on either
# database: a SELECT of the run and the transaction of the proposal (begin, lock, rules, the
# previous read's result, the call written approved and claimed, the steps and their count, the
# events, commit); and the read's own query (kb_search). The read's result is written with the
# next step's proposal (or the run's end), not in a transaction of its own. The history is not
# read back: the steps this worker recorded are handed over. On PostgreSQL the steps' INSERT
# and their count's UPDATE are one statement. Lower is welcome: change the number.
STEP_QUERIES = (9 if connection.vendor == "postgresql" else 10) + 1
STEP_COMMITS = 1


def commits(queries: list[str]) -> int:
    # Inside the test's transaction a commit is the release of a savepoint.
    return sum(1 for sql in queries if sql == "COMMIT" or sql.startswith("RELEASE SAVEPOINT"))


def reader(steps: int) -> Agent:
    return Agent.objects.create(
        slug=f"reader-{steps}",
        name=f"reader {steps}",
        objective="test",
        scope="test",
        tools=["kb_search"],
        autonomy_level=4,
        max_steps=steps + 5,
        playbook={
            "steps": [
                *(
                    {"id": f"s{index}", "tool": "kb_search", "arguments": {"query": "refund"}, "rationale": "Look."}
                    for index in range(steps)
                ),
                {"final": {"done": True}},
            ]
        },
    )


def run_counted(agent: Agent, user) -> tuple[list[str], Run]:
    run = runtime.run_create(agent=agent, user=user, payload={})
    with CaptureQueriesContext(connection) as queries:
        runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    return [query["sql"] for query in queries.captured_queries], run


def test_a_step_costs_a_fixed_number_of_queries_and_one_commit(operator):
    grant_tools(operator, ["kb_search"])
    short, short_run = run_counted(reader(3), operator)
    long, long_run = run_counted(reader(6), operator)
    # The difference is three steps: what the run's start and end cost cancels out, and a step
    # costs the same however long the history is.
    assert long_run.step_count - short_run.step_count == 3 * 3  # reasoning, call, observation
    assert (len(long) - len(short)) / 3 == STEP_QUERIES, "\n".join(long)
    assert (commits(long) - commits(short)) / 3 == STEP_COMMITS


def test_a_read_claimed_with_its_proposal_runs_again_after_a_crash(operator):
    grant_tools(operator, ["kb_search"])
    agent = reader(1)
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    run.refresh_from_db()
    action = Action(kind="tool", tool="kb_search", arguments={"query": "refund"}, transcript={"playbook_step": "s0"})
    cleared: list[ToolCall] = []
    assert proposals.propose(run, agent, action, Redactor(), lease=lease, cleared=cleared) == "execute"
    # Committed claimed: the worker dies here, before the read runs.
    call = ToolCall.objects.get(run=run)
    assert call.status == ToolCallStatus.EXECUTING and call.attempts == 1 and cleared[0].pk == call.pk
    Run.objects.filter(pk=run.pk).update(lease_expires_at=None)  # its lease runs out

    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    call.refresh_from_db()
    assert call.status == ToolCallStatus.SUCCEEDED
    observations = Step.objects.filter(run=run, kind=Step.Kind.OBSERVATION, input__call_step=call.step)
    assert observations.count() == 1


@pytest.mark.parametrize("change", ["cancel", "kill switch"])
def test_a_read_is_not_claimed_with_its_proposal_past_the_step_boundary(operator, change):
    grant_tools(operator, ["kb_search"])
    agent = reader(1)
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    run.refresh_from_db()
    if change == "cancel":
        Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    else:
        Agent.objects.filter(pk=agent.pk).update(enabled=False)
    action = Action(kind="tool", tool="kb_search", arguments={"query": "refund"})
    cleared: list[ToolCall] = []
    assert proposals.propose(run, agent, action, Redactor(), lease=lease, cleared=cleared) == "execute"
    call = ToolCall.objects.get(run=run)
    assert (call.status, call.attempts) == (cleared[0].status, cleared[0].attempts) == (ToolCallStatus.APPROVED, 0)
    assert call.approved_hash == call.arguments_hash


def test_a_call_that_is_not_a_read_is_claimed_only_when_it_runs(operator):
    grant_tools(operator, ["send_email"])
    agent = Agent.objects.create(
        slug="mailer", name="mailer", objective="t", scope="t", tools=["send_email"], autonomy_level=4
    )
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    run.refresh_from_db()
    arguments = {"to": "a@example.com", "subject": "s", "body": "b"}
    action = Action(kind="tool", tool="send_email", arguments=arguments)
    assert proposals.propose(run, agent, action, Redactor(), lease=lease) == "execute"
    # A crash now leaves it approved: the next worker runs it once, with no doubt about its effect.
    assert ToolCall.objects.get(run=run).status == ToolCallStatus.APPROVED


@pytest.mark.parametrize("change", ["cancel", "kill switch", "lease", "paused"])
def test_the_claim_checks_the_step_boundary(operator, change):
    grant_tools(operator, ["kb_search"])
    agent = reader(1)
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    call = ToolCall.objects.create(
        run=run, step=1, tool="kb_search", arguments={}, arguments_hash="h", status=ToolCallStatus.APPROVED
    )
    if change == "cancel":
        Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    elif change == "kill switch":
        Agent.objects.filter(pk=agent.pk).update(enabled=False)
    elif change == "lease":
        Run.objects.filter(pk=run.pk).update(lease_owner="another worker")
    else:
        Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING)
    assert not tool_call_claim(run=run, tool_call=call, lease=lease)
    assert ToolCall.objects.get(pk=call.pk).status == ToolCallStatus.APPROVED
    assert call.status == ToolCallStatus.APPROVED and call.attempts == 0


def test_the_claim_moves_the_call_and_counts_the_attempt(operator):
    agent = reader(1)
    run = runtime.run_create(agent=agent, user=operator, payload={})
    lease = runtime.lease_take(run.pk)
    call = ToolCall.objects.create(
        run=run, step=1, tool="kb_search", arguments={}, arguments_hash="h", status=ToolCallStatus.APPROVED
    )
    assert tool_call_claim(run=run, tool_call=call, lease=lease)
    stored = ToolCall.objects.get(pk=call.pk)
    assert (stored.status, stored.attempts) == (call.status, call.attempts) == (ToolCallStatus.EXECUTING, 1)
    assert not tool_call_claim(run=run, tool_call=stored, lease=lease)  # once only


def test_the_history_read_step_by_step_is_the_whole_view(support_agent, starter, assigned_reviewer):
    payload = {
        "ticket_id": 1,
        "customer_email": "jane@example.com",
        "amount": 120,
        "currency": "USD",
        "reason": "kettle arrived broken; call +1 415 555 0100",
    }
    from agents.models import Ticket

    payload["ticket_id"] = Ticket.objects.get().pk
    run = runtime.run_create(agent=support_agent, user=starter, payload=payload)
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING
    trace = Trace(run)
    first = trace.view(Redactor(run.redactions))
    assert first == run_view(run, Redactor(run.redactions))
    approval = ApprovalRequest.objects.get(run=run)
    approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    # Only the steps added since are read; the view is the one built from the whole history.
    later = trace.view(Redactor(run.redactions))
    assert len(later.history) > len(first.history)
    assert later == run_view(run, Redactor(run.redactions))
    assert "jane@example.com" not in repr(later)


def _read_recorded(run: Run) -> None:
    """The run's read finished, with its observation and its event, whatever came after it."""
    from audit.models import AuditEvent

    call = ToolCall.objects.get(run=run)
    assert call.status == ToolCallStatus.SUCCEEDED and call.output == {"results": []}
    observation = Step.objects.get(run=run, kind=Step.Kind.OBSERVATION, input__call_step=call.step)
    assert observation.index == call.step + 1
    executed = AuditEvent.objects.filter(run_id=run.pk, action="agents.tool_call.executed")
    assert executed.count() == 1 and executed.get().data["status"] == ToolCallStatus.SUCCEEDED


def _read_tool(monkeypatch, func) -> None:
    from agents import tools

    original = tools.registry["kb_search"]
    monkeypatch.setitem(tools.registry, "kb_search", original.__class__(**{**original.__dict__, "func": func}))


def test_a_reads_result_waiting_for_the_next_step_is_written_when_the_run_is_cancelled(operator, monkeypatch):
    grant_tools(operator, ["kb_search"])

    def read_then_cancel(args, context):
        Run.objects.filter(pk=context.run_id).update(cancel_requested=True)  # a cancel meanwhile
        return {"results": []}

    _read_tool(monkeypatch, read_then_cancel)
    run = runtime.run_create(agent=reader(2), user=operator, payload={})
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    _read_recorded(run)


def test_a_reads_result_waiting_for_the_next_step_is_written_when_the_loop_fails(operator, monkeypatch):
    from agents.reasoners.scripted import ScriptedReasoner

    grant_tools(operator, ["kb_search"])
    _read_tool(monkeypatch, lambda args, context: {"results": []})
    original = ScriptedReasoner.next_action

    def second_fails(self, view):
        if any(entry["type"] == "observation" for entry in view.history):
            raise ValueError("the reasoner broke")
        return original(self, view)

    monkeypatch.setattr(ScriptedReasoner, "next_action", second_fails)
    run = runtime.run_create(agent=reader(2), user=operator, payload={})
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "the reasoner broke" in run.error
    _read_recorded(run)


def test_a_reads_result_is_written_with_the_next_proposal_in_the_order_of_the_run(operator):
    from audit.models import AuditEvent

    grant_tools(operator, ["kb_search"])
    run = runtime.run_create(agent=reader(2), user=operator, payload={})
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    kinds = list(Step.objects.filter(run=run).order_by("index").values_list("kind", flat=True))
    assert kinds == [Step.Kind.REASONING, Step.Kind.TOOL_CALL, Step.Kind.OBSERVATION] * 2 + [Step.Kind.REASONING]
    actions = [
        action
        for action in AuditEvent.objects.filter(run_id=run.pk).order_by("id").values_list("action", flat=True)
        if action.startswith("agents.step") or action.startswith("agents.tool_call")
    ]
    step = ["agents.step.reasoning", "agents.tool_call.proposed", "agents.tool_call.executed"]
    assert actions == step * 2 + ["agents.step.reasoning"]
    assert not ToolCall.objects.filter(run=run).exclude(status=ToolCallStatus.SUCCEEDED).exists()
