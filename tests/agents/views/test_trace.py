"""The run trace page."""

from __future__ import annotations

import pytest

from agents import runtime
from agents.models import LedgerEntry, RunStatus
from approvals.decisions import approval_request_decide
from tests.pages import client_for, waiting_refund

pytestmark = pytest.mark.django_db


def test_run_trace_follows_may_read_run(support_agent, starter, assigned_reviewer, other_reviewer, outsider):
    approval = waiting_refund(support_agent, starter)
    url = f"/runs/{approval.run_id}/"
    for user in (starter, assigned_reviewer):
        response = client_for(user).get(url)
        assert response.status_code == 200
        assert response.context["run"].pk == approval.run_id and "issue_refund" in response.text
    hidden = client_for(other_reviewer).get(url)
    assert hidden.status_code == 404 and "issue_refund" not in hidden.text
    assert client_for(outsider).get(url + "trace.json").status_code == 404
    assert client_for(starter).get("/runs/999999/").status_code == 404


def test_run_trace_json_returns_steps_after_an_index(support_agent, starter):
    approval = waiting_refund(support_agent, starter)
    client = client_for(starter)
    data = client.get(f"/runs/{approval.run_id}/trace.json").json()
    assert data["run"]["status"] == RunStatus.WAITING and not data["run"]["terminal"]
    indexes = [step["index"] for step in data["steps"]]
    assert indexes == sorted(indexes) and len(indexes) >= 4
    later = client.get(f"/runs/{approval.run_id}/trace.json?after={indexes[1]}").json()
    assert [step["index"] for step in later["steps"]] == indexes[2:]
    assert data["approvals"][0]["tool"] == "issue_refund"


def test_trace_shows_the_executed_edit(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    approval_request_decide(
        approval=approval,
        reviewer=assigned_reviewer,
        verdict="edit",
        arguments={**approval.arguments, "amount": 33.25},
    )
    runtime.run_advance(run_id=approval.run_id)
    assert LedgerEntry.objects.get().amount == pytest.approx(33.25)
    page = client_for(starter).get(f"/runs/{approval.run_id}/").text
    assert "Decision: issue_refund approved by reviewer" in page
    assert "33.25" in page
