"""Each status machine walked whole: every allowed move works, every other is refused."""

from __future__ import annotations

import itertools

import pytest

from agents import runtime
from agents.models import RUN_MOVES, TOOL_CALL_MOVES, Run, RunStatus, ToolCall, ToolCallStatus
from agents.runtime.status import StatusMoveRefused, run_move, tool_call_move
from approvals.decisions import approval_move
from approvals.models import APPROVAL_MOVES, ApprovalKind, ApprovalRequest, ApprovalStatus

pytestmark = pytest.mark.django_db


def test_every_status_has_a_row_in_its_map():
    assert set(RUN_MOVES) == set(RunStatus)
    assert set(TOOL_CALL_MOVES) == set(ToolCallStatus)
    assert set(APPROVAL_MOVES) == set(ApprovalStatus)
    for moves, statuses in (
        (RUN_MOVES, RunStatus),
        (TOOL_CALL_MOVES, ToolCallStatus),
        (APPROVAL_MOVES, ApprovalStatus),
    ):
        assert all(targets <= set(statuses) for targets in moves.values())


@pytest.fixture
def run(support_agent, starter) -> Run:
    return runtime.run_create(
        agent=support_agent, user=starter, payload={"ticket_id": 1, "customer_email": "a@example.com", "amount": 5}
    )


@pytest.fixture
def tool_call(run) -> ToolCall:
    return ToolCall.objects.create(run=run, step=1, tool="issue_refund", arguments={}, arguments_hash="x")


@pytest.fixture
def approval(run, tool_call) -> ApprovalRequest:
    return ApprovalRequest.objects.create(
        run=run,
        agent=run.agent,
        tool_call=tool_call,
        kind=ApprovalKind.APPROVAL,
        tool="issue_refund",
        arguments={},
        arguments_hash="x",
        risk_class="financial",
        policy_reason="test",
    )


def test_run_moves(run):
    for source, target in itertools.product(RunStatus, RunStatus):
        Run.objects.filter(pk=run.pk).update(status=source)
        allowed = target in RUN_MOVES[source]
        if not any(target in targets for targets in RUN_MOVES.values()):
            with pytest.raises(StatusMoveRefused):
                run_move(run_id=run.pk, to=target)
            continue
        assert run_move(run_id=run.pk, to=target) is allowed, (source, target)
        assert Run.objects.get(pk=run.pk).status == (target if allowed else source)


def test_a_run_move_also_needs_its_condition(run):
    from django.db.models import Q

    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, lease_owner="worker-a")
    assert run_move(run_id=run.pk, to=RunStatus.QUEUED, where=Q(lease_owner="worker-b")) is False
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert run_move(run_id=run.pk, to=RunStatus.QUEUED, where=Q(lease_owner="worker-a")) is True


def test_tool_call_moves(tool_call):
    for source, target in itertools.product(ToolCallStatus, ToolCallStatus):
        ToolCall.objects.filter(pk=tool_call.pk).update(status=source)
        allowed = target in TOOL_CALL_MOVES[source]
        if allowed:
            assert tool_call_move(tool_call_id=tool_call.pk, to=target, source=source) is True
        elif any(target in targets for targets in TOOL_CALL_MOVES.values()):
            # From where the map does not allow it: named as the source it is refused outright;
            # unnamed, the conditional UPDATE finds no row to move.
            with pytest.raises(StatusMoveRefused):
                tool_call_move(tool_call_id=tool_call.pk, to=target, source=source)
            assert tool_call_move(tool_call_id=tool_call.pk, to=target) is False
        else:
            with pytest.raises(StatusMoveRefused):
                tool_call_move(tool_call_id=tool_call.pk, to=target)
        assert ToolCall.objects.get(pk=tool_call.pk).status == (target if allowed else source), (source, target)


def test_approval_moves(approval):
    for source, target in itertools.product(ApprovalStatus, ApprovalStatus):
        ApprovalRequest.objects.filter(pk=approval.pk).update(status=source)
        allowed = target in APPROVAL_MOVES[source]
        assert approval_move(approval_id=approval.pk, to=target) is allowed, (source, target)
        assert ApprovalRequest.objects.get(pk=approval.pk).status == (target if allowed else source)
