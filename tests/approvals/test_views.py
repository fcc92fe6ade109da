"""The reviewer inbox pages."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from agents import runtime
from agents.models import Agent
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus, Decision
from tests.conftest import make_user
from tests.pages import SCRIPT, client_for, csrf_token, waiting_refund

pytestmark = pytest.mark.django_db


# --- Access --------------------------------------------------------------------------------


def test_pages_need_sign_in(support_agent, starter):
    approval = waiting_refund(support_agent, starter)
    anonymous = Client()
    for url in ("/inbox/", f"/inbox/{approval.pk}/", "/console/", f"/runs/{approval.run_id}/"):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_inbox_lists_only_reviewable_agents(support_agent, starter, assigned_reviewer, other_reviewer):
    approval = waiting_refund(support_agent, starter)
    mine = client_for(assigned_reviewer).get("/inbox/")
    assert mine.status_code == 200
    assert f'data-id="{approval.pk}"' in mine.text
    assert "<title>(1) Inbox" in mine.text
    theirs = client_for(other_reviewer).get("/inbox/")
    assert theirs.status_code == 200
    assert f'data-id="{approval.pk}"' not in theirs.text
    assert client_for(other_reviewer).get(f"/inbox/{approval.pk}/").status_code == 404
    response = client_for(other_reviewer).post(f"/inbox/{approval.pk}/", {"verdict": "approve"})
    assert response.status_code == 404
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_inbox_filters(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer)
    assert f'data-id="{approval.pk}"' in client.get("/inbox/?risk=financial&agent=support&order=urgent").text
    assert f'data-id="{approval.pk}"' not in client.get("/inbox/?risk=read").text
    assert f'data-id="{approval.pk}"' not in client.get("/inbox/?status=approved").text
    # an unknown filter value falls back to the default (pending, every agent) instead of failing
    response = client.get("/inbox/?status=bogus&order=sideways&agent=nope")
    assert response.status_code == 200 and f'data-id="{approval.pk}"' in response.text


def test_inbox_query_count_does_not_grow_with_items(support_agent, starter, assigned_reviewer):
    client = client_for(assigned_reviewer)
    waiting_refund(support_agent, starter)
    client.get("/inbox/")
    with CaptureQueriesContext(connection) as few:
        client.get("/inbox/")
    for _ in range(5):
        waiting_refund(support_agent, starter)
    with CaptureQueriesContext(connection) as many:
        assert client.get("/inbox/").text.count('class="inbox-row') == 6 + 1  # six rows and the template
    assert len(many) == len(few)


# --- CSRF ----------------------------------------------------------------------------------


def test_decision_without_csrf_token_is_refused(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer, csrf=True)
    assert client.post(f"/inbox/{approval.pk}/", {"verdict": "approve"}).status_code == 403
    assert client.post("/inbox/bulk/", {"ids": [approval.pk], "verdict": "approve"}).status_code == 403
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    token = csrf_token(client, f"/inbox/{approval.pk}/")
    response = client.post(f"/inbox/{approval.pk}/", {"verdict": "approve", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED


# --- Escaping ------------------------------------------------------------------------------


def test_model_written_text_is_escaped(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter, reason=SCRIPT)
    assert SCRIPT in approval.rationale  # the playbook puts the input's reason in the rationale
    ApprovalRequest.objects.filter(pk=approval.pk).update(policy_reason=SCRIPT)
    client = client_for(assigned_reviewer)
    for url in ("/inbox/", f"/inbox/{approval.pk}/", f"/runs/{approval.run_id}/"):
        text = client.get(url).text
        assert SCRIPT not in text, url
        assert "&lt;script&gt;alert(" in text, url
    # the page state for the scripts is JSON inside <script type="application/json">: escaped too
    text = client.get(f"/inbox/{approval.pk}/").text
    state = text.split('id="page-state" type="application/json">')[1].split("</script>")[0]
    assert "<script" not in state and json.loads(state)["proposed"]["reason"] == SCRIPT


# --- Deciding on the page ------------------------------------------------------------------


def test_approve_on_the_page(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer)
    response = client.post(f"/inbox/{approval.pk}/", {"verdict": "approve"}, follow=True)
    assert response.status_code == 200 and "Approve: #" in response.text
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED and approval.decided_by == assigned_reviewer


def test_edit_from_the_schema_form(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer)
    page = client.get(f"/inbox/{approval.pk}/").text
    assert 'name="arg-amount"' in page and 'name="arg-currency"' in page
    response = client.post(
        f"/inbox/{approval.pk}/",
        {
            "verdict": "edit",
            "edit_mode": "fields",
            "arg-ticket_id": str(approval.arguments["ticket_id"]),
            "arg-amount": "75.5",
            "arg-currency": '"EUR"',
            "arg-reason": "partial refund",
            "comment": "half",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED
    assert approval.decided_arguments["amount"] == 75.5 and approval.decided_arguments["currency"] == "EUR"


def test_edit_as_json(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    edited = {**approval.arguments, "amount": 42}
    response = client_for(assigned_reviewer).post(
        f"/inbox/{approval.pk}/", {"verdict": "edit", "edit_mode": "json", "arguments_json": json.dumps(edited)}
    )
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.decided_arguments["amount"] == 42


def test_invalid_edit_is_shown_inline_and_keeps_the_values(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer)
    # over the block rule (refunds over 5000 are never made by an agent): 400 with the form kept
    response = client.post(
        f"/inbox/{approval.pk}/",
        {"verdict": "edit", "edit_mode": "fields", "arg-amount": "7777", "arg-currency": '"USD"', "comment": "more"},
    )
    assert response.status_code == 400
    assert 'role="alert"' in response.text and "refused" in response.text
    assert 'value="7777' in response.text and 'value="more"' in response.text
    # the schema rejects a negative amount: the error sits next to the field
    response = client.post(
        f"/inbox/{approval.pk}/",
        {"verdict": "edit", "edit_mode": "fields", "arg-amount": "-3", "arg-currency": '"USD"'},
    )
    assert response.status_code == 400
    assert 'class="field-error"' in response.text and 'value="-3"' in response.text
    response = client.post(f"/inbox/{approval.pk}/", {"verdict": "edit", "edit_mode": "json", "arguments_json": "{"})
    assert response.status_code == 400 and "not valid" in response.text
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING and not Decision.objects.filter(request=approval).exists()


def test_reject_needs_a_reason(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    response = client_for(assigned_reviewer).post(f"/inbox/{approval.pk}/", {"verdict": "reject", "comment": "  "})
    assert response.status_code == 400 and "needs a reason" in response.text
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_late_decision_shows_who_decided_and_changes_nothing(support_agent, starter, assigned_reviewer):
    approval = waiting_refund(support_agent, starter)
    other = make_user("second", "reviewers")
    assign_perm("review_agent", other, support_agent)
    approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="approve")
    response = client_for(other).post(f"/inbox/{approval.pk}/", {"verdict": "reject", "comment": "no, keep my text"})
    assert response.status_code == 409
    assert "Already decided: approved by reviewer." in response.text
    assert "no, keep my text" in response.text
    assert Decision.objects.filter(request=approval).count() == 1


def test_starter_is_refused_on_the_page(support_agent, starter):
    assign_perm("review_agent", starter, support_agent)
    approval = waiting_refund(support_agent, starter)
    response = client_for(starter).post(f"/inbox/{approval.pk}/", {"verdict": "approve"})
    assert response.status_code == 403 and "four-eyes" in response.text
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING and not Decision.objects.filter(request=approval).exists()


def test_bulk_approve_and_reject(support_agent, starter, assigned_reviewer):
    first = waiting_refund(support_agent, starter)
    second = waiting_refund(support_agent, starter)
    client = client_for(assigned_reviewer)
    response = client.post("/inbox/bulk/", {"ids": [first.pk, second.pk], "verdict": "reject", "comment": ""})
    assert response.status_code == 400 and "needs a reason" in response.text
    assert f'value="{first.pk}" form="bulk-form" aria-label="Select" data-field="pick" checked' in response.text
    response = client.post("/inbox/bulk/", {"ids": [first.pk, second.pk, 999999], "verdict": "approve"}, follow=True)
    assert "Approve: 2 items." in response.text and "#999999: no such approval." in response.text
    assert set(ApprovalRequest.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)) == {
        ApprovalStatus.APPROVED
    }


def test_level_one_suggestion_and_level_three_review_buttons(support_agent, starter, assigned_reviewer):
    support_agent.autonomy_level = 1
    support_agent.save()
    suggestion = waiting_refund(support_agent, starter)
    assert suggestion.kind == "suggestion"
    page = client_for(assigned_reviewer).get(f"/inbox/{suggestion.pk}/").text
    assert 'name="verdict" value="done"' in page and 'name="verdict" value="dismiss"' in page
    assert 'value="approve"' not in page
    response = client_for(assigned_reviewer).post(f"/inbox/{suggestion.pk}/", {"verdict": "done"})
    assert response.status_code == 302
    suggestion.refresh_from_db()
    assert suggestion.status == ApprovalStatus.DONE and suggestion.decided_by == assigned_reviewer
    assert Decision.objects.get(request=suggestion).verdict == "done"


# --- Console -------------------------------------------------------------------------------


def test_a_question_is_answered_on_the_page(starter, assigned_reviewer, support_agent):
    from tests.conftest import grant_tools

    agent = Agent.objects.create(
        slug="asker",
        name="Asker",
        objective="o",
        scope="s",
        tools=["ask_human"],
        playbook={"steps": [{"id": "ask", "tool": "ask_human", "arguments": {"question": f"Which one? {SCRIPT}"}}]},
    )
    grant_tools(starter, ["ask_human"])
    assign_perm("review_agent", assigned_reviewer, agent)
    run = runtime.run_create(agent=agent, user=starter, payload={})
    runtime.run_advance(run_id=run.pk)
    question = ApprovalRequest.objects.get(run=run)
    assert question.kind == "question"
    client = client_for(assigned_reviewer)
    page = client.get(f"/inbox/{question.pk}/").text
    assert 'name="verdict" value="respond"' in page and 'value="approve"' not in page
    assert SCRIPT not in page
    assert client.post(f"/inbox/{question.pk}/", {"verdict": "respond", "comment": ""}).status_code == 400
    question.refresh_from_db()
    assert question.status == ApprovalStatus.PENDING
    assert client.post(f"/inbox/{question.pk}/", {"verdict": "respond", "comment": "the blue one"}).status_code == 302
    question.refresh_from_db()
    assert question.status == ApprovalStatus.ANSWERED
    assert Decision.objects.get(request=question).comment == "the blue one"
