"""The server-rendered pages: who may see what, CSRF, escaping, inline errors, console changes."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from agents import runtime
from agents.models import Agent, LedgerEntry, Run, RunStatus, Ticket
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest, ApprovalStatus, BusinessRule, Decision
from audit.models import AuditEvent
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert('owned')</script>"


def client_for(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def waiting_refund(agent, starter, *, amount=120, reason="broken kettle") -> ApprovalRequest:
    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=agent,
        user=starter,
        payload={
            "ticket_id": ticket.pk,
            "customer_email": "jane@example.com",
            "amount": amount,
            "currency": "USD",
            "reason": reason,
        },
    )
    runtime.run_advance(run_id=run.pk)
    return ApprovalRequest.objects.select_related("agent", "run").get(run=run, tool="issue_refund")


def csrf_token(client: Client, url: str) -> str:
    client.get(url)
    return client.cookies["csrftoken"].value


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


def test_console_is_for_operators_only(support_agent, operator, assigned_reviewer, outsider):
    console = client_for(operator).get("/console/")
    assert console.status_code == 200 and f"/console/agents/{support_agent.slug}/enabled/" in console.text
    for user in (assigned_reviewer, outsider):
        refused = client_for(user).get("/console/")
        assert refused.status_code == 403 and f"/console/agents/{support_agent.slug}/" not in refused.text
    response = client_for(assigned_reviewer).post(
        f"/console/agents/{support_agent.slug}/enabled/", {"enabled": "0", "reason": "x"}
    )
    assert response.status_code == 403
    assert Agent.objects.get(pk=support_agent.pk).enabled
    assert not AuditEvent.objects.filter(action="agents.agent.kill_switch").exists()


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


def test_console_changes_need_csrf(support_agent, operator):
    client = client_for(operator, csrf=True)
    response = client.post(f"/console/agents/{support_agent.slug}/enabled/", {"enabled": "0", "reason": "x"})
    assert response.status_code == 403
    assert client.post("/console/emergency-stop/", {"reason": "x", "confirm": "on"}).status_code == 403
    assert Agent.objects.get(pk=support_agent.pk).enabled


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


def test_console_lists_agents_in_a_fixed_number_of_queries(support_agent, starter, operator):
    waiting_refund(support_agent, starter)
    client = client_for(operator)
    client.get("/console/")
    with CaptureQueriesContext(connection) as few:
        page = client.get("/console/").text
    assert "Support agent" in page
    for index in range(4):
        Agent.objects.create(slug=f"extra-{index}", name=f"Extra {index}", objective="o", scope="s", tools=[])
    with CaptureQueriesContext(connection) as many:
        page = client.get("/console/").text
    assert "Extra 3" in page
    assert len(many) == len(few)


def test_level_change_needs_a_reason_and_is_audited(support_agent, operator):
    client = client_for(operator)
    url = f"/console/agents/{support_agent.slug}/level/"
    response = client.post(url, {"level": "3", "tool": "", "reason": ""})
    assert response.status_code == 400 and "Say why" in response.text
    assert Agent.objects.get(pk=support_agent.pk).autonomy_level == 2
    response = client.post(url, {"level": "3", "tool": "", "reason": "trusted now"})
    assert response.status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).autonomy_level == 3
    event = AuditEvent.objects.filter(action="agents.agent.level_changed").latest("id")
    assert event.data["reason"] == "trusted now" and event.data["old"] == 2 and event.data["new"] == 3
    # level 5 on an agent with risky tools is refused by the model's validation, shown inline
    response = client.post(url, {"level": "5", "tool": "", "reason": "go"})
    assert response.status_code == 400 and "Level 5" in response.text
    assert Agent.objects.get(pk=support_agent.pk).autonomy_level == 3
    assert AuditEvent.objects.filter(action="agents.agent.level_changed").count() == 1
    response = client.post(url, {"level": "1", "tool": "send_email", "reason": "careful with mail"})
    assert response.status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).tool_levels == {"send_email": 1}


def test_kill_switch_and_emergency_stop(support_agent, starter, operator):
    approval = waiting_refund(support_agent, starter)
    client = client_for(operator)
    url = f"/console/agents/{support_agent.slug}/enabled/"

    def switches() -> list[tuple[bool, str]]:
        events = AuditEvent.objects.filter(action="agents.agent.kill_switch").order_by("id")
        return [(event.data["new"], event.data["reason"]) for event in events]

    assert client.post(url, {"enabled": "0", "reason": ""}).status_code == 400
    assert Agent.objects.get(pk=support_agent.pk).enabled and switches() == []
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.WAITING
    assert client.post(url, {"enabled": "0", "reason": "misbehaving"}).status_code == 302
    assert not Agent.objects.get(pk=support_agent.pk).enabled
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.CANCELLED
    assert client.post(url, {"enabled": "1", "reason": "fixed"}).status_code == 302
    assert Agent.objects.get(pk=support_agent.pk).enabled
    assert switches() == [(False, "misbehaving"), (True, "fixed")]
    assert client.post("/console/emergency-stop/", {"reason": "incident"}).status_code == 400  # not confirmed
    assert Agent.objects.get(pk=support_agent.pk).enabled and len(switches()) == 2
    response = client.post("/console/emergency-stop/", {"reason": "incident", "confirm": "on"}, follow=True)
    assert "Emergency stop: 1 agent disabled." in response.text
    assert not Agent.objects.filter(enabled=True).exists()


def test_business_rules_create_edit_delete_with_validation(support_agent, operator):
    client = client_for(operator)
    bad = {"tool": "issue_refund", "field": "nope", "operator": ">", "value": "abc", "effect": "block"}
    response = client.post("/console/rules/new/", bad)
    assert response.status_code == 400
    assert "has no argument" in response.text and "needs a number" in response.text
    good = {**bad, "field": "amount", "value": "900", "note": SCRIPT, "enabled": "on", "agent": support_agent.pk}
    response = client.post("/console/rules/new/", good)
    assert response.status_code == 302
    rule = BusinessRule.objects.get(field="amount", value=900)
    assert rule.agent == support_agent and rule.effect == "block"
    page = client.get("/console/").text
    assert SCRIPT not in page and "&lt;script&gt;" in page
    response = client.post(f"/console/rules/{rule.pk}/", {**good, "operator": "not_in", "value": "5"})
    assert response.status_code == 400 and "needs a list" in response.text
    response = client.post(f"/console/rules/{rule.pk}/", {**good, "value": "1200", "reason": "raise"})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.value == 1200
    assert client.post(f"/console/rules/{rule.pk}/delete/", {"reason": "obsolete"}).status_code == 302
    assert not BusinessRule.objects.filter(pk=rule.pk).exists()
    actions = set(AuditEvent.objects.filter(action__startswith="approvals.rule.").values_list("action", flat=True))
    assert actions == {"approvals.rule.created", "approvals.rule.changed", "approvals.rule.deleted"}


def test_reviewer_assignments_grant_and_revoke(support_agent, operator, reviewer):
    client = client_for(operator)
    data = {"reviewer": reviewer.username, "agent": support_agent.slug, "granted": "1", "reason": "on call"}
    assert client.post("/console/assignments/", data).status_code == 302
    assert type(reviewer).objects.get(pk=reviewer.pk).has_perm("agents.review_agent", support_agent)
    page = client.get("/console/").text
    assert f"Revoke {reviewer.username} on {support_agent.name}" in page
    assert client.post("/console/assignments/", {**data, "granted": "0"}).status_code == 302
    assert not type(reviewer).objects.get(pk=reviewer.pk).has_perm("agents.review_agent", support_agent)
    events = AuditEvent.objects.filter(action__startswith="approvals.reviewer.").order_by("id")
    assert [(event.action, event.data["reviewer"], event.actor_id) for event in events] == [
        ("approvals.reviewer.assigned", reviewer.username, str(operator.pk)),
        ("approvals.reviewer.revoked", reviewer.username, str(operator.pk)),
    ]
    assert client.post("/console/assignments/", {**data, "reviewer": "ghost"}).status_code == 400
    assert AuditEvent.objects.filter(action__startswith="approvals.reviewer.").count() == 2


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
