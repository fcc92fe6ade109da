from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from audit.models import AuditEvent
from audit.services import audit_record
from tests.audit.conftest import sealed

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/audit/auditevent/"


def detail(event: AuditEvent) -> str:
    return f"{CHANGELIST}{event.pk}/change/"


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def event(support_agent, reviewer):
    from agents.models import Run

    run = Run.objects.create(agent=support_agent)
    written = audit_record(
        actor=reviewer,
        action="approvals.request.decided",
        target=run,
        data={"verdict": "edit", "arguments": {"amount": 250}, "comment": "<script>alert(1)</script>"},
    )
    [event] = sealed(written)
    return event


def test_auditor_sees_the_list_with_the_head_hash(staff_auditor, event):
    response = client_for(staff_auditor).get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    head = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").first()
    assert head.hash in page and "Latest checkpoint" in page
    assert "approvals.request.decided" in page
    assert f'href="/runs/{event.run_id}/"' in page


def test_auditor_sees_the_app_on_the_admin_index(staff_auditor):
    assert CHANGELIST in client_for(staff_auditor).get("/admin/").content.decode()


def test_detail_pretty_prints_escaped_data_and_links_the_run(staff_auditor, event):
    response = client_for(staff_auditor).get(detail(event))
    assert response.status_code == 200
    page = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "&quot;amount&quot;: 250" in page  # indented JSON, quotes escaped
    assert f'href="/runs/{event.run_id}/"' in page
    assert f'href="{CHANGELIST}?run_id={event.run_id}"' in page
    assert "content matches its hash" in page
    # Read-only: no form to save or delete.
    assert 'name="_save"' not in page and "/delete/" not in page


def test_filters_search_and_date_hierarchy(staff_auditor, event, support_agent):
    client = client_for(staff_auditor)
    other = audit_record(actor=None, action="tests.admin.other")
    for query in (
        {"action": "approvals.request.decided"},
        {"actor_type__exact": "user"},
        {"agent_slug": support_agent.slug},
        {"q": "reviewer"},
        {"q": event.hash},
        {"run_id": event.run_id},
        {"created_at__year": event.created_at.year, "q": "decided"},
    ):
        response = client.get(CHANGELIST, query)
        assert response.status_code == 200, query
        shown = list(response.context["cl"].result_list)
        assert event in shown and other not in shown, query


def test_nobody_may_add_change_or_delete(staff_auditor, event):
    superuser = User.objects.create_superuser("root", "root@example.com", "x")
    for user in (staff_auditor, superuser):
        client = client_for(user)
        listing = client.get(CHANGELIST)
        assert listing.context["has_add_permission"] is False
        assert listing.context["action_form"] is None  # no bulk action offered, delete_selected included
        assert client.get(f"{CHANGELIST}add/").status_code == 403
        assert client.get(f"{CHANGELIST}{event.pk}/delete/").status_code == 403
        assert client.post(detail(event), {"action": "rewritten"}).status_code == 403
        assert client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [event.pk]}).status_code in (
            200,
            302,
        )
    assert AuditEvent.objects.get(pk=event.pk).action == "approvals.request.decided"
    assert AuditEvent.objects.count() >= 1 and AuditEvent.objects.filter(pk=event.pk).exists()


def test_superuser_may_read(event):
    superuser = User.objects.create_superuser("root", "root@example.com", "x")
    response = client_for(superuser).get(detail(event))
    assert response.status_code == 200
    page = response.content.decode()
    assert event.hash in page and "approvals.request.decided" in page
    assert 'name="_save"' not in page  # reading only, even for a superuser


def test_staff_who_are_not_auditors_get_403(staff_outsider, event):
    client = client_for(staff_outsider)
    for response in (client.get(CHANGELIST), client.get(detail(event))):
        assert response.status_code == 403
        assert event.hash not in response.content.decode() and "alert(1)" not in response.content.decode()
    assert CHANGELIST not in client.get("/admin/").content.decode()


@pytest.mark.parametrize("persona", ["reviewer", "operator", "outsider", "auditor"])
def test_non_staff_are_sent_to_the_admin_login(request, persona, event):
    response = client_for(request.getfixturevalue(persona)).get(CHANGELIST)
    assert response.status_code == 302 and response["Location"] == f"/admin/login/?next={CHANGELIST}"


def test_anonymous_is_sent_to_the_admin_login(event):
    response = Client().get(detail(event))
    assert response.status_code == 302 and response["Location"] == f"/admin/login/?next={detail(event)}"


def test_filter_by_actor(staff_auditor, reviewer, other_reviewer):
    mine = audit_record(actor=reviewer, action="tests.admin.mine")
    audit_record(actor=other_reviewer, action="tests.admin.theirs")
    audit_record(actor="policy", action="tests.admin.policy")
    client = client_for(staff_auditor)

    page = client.get(CHANGELIST).content.decode()
    for actor in ("reviewer", "other_reviewer", "policy"):
        assert f'href="?actor={actor}"' in page  # offered in the sidebar

    response = client.get(CHANGELIST, {"actor": "reviewer"})
    assert response.status_code == 200
    assert [event.pk for event in response.context["cl"].result_list] == [mine.pk]
    # Combined with the actor type filter.
    response = client.get(CHANGELIST, {"actor": "policy", "actor_type__exact": "system"})
    assert [event.action for event in response.context["cl"].result_list] == ["tests.admin.policy"]


def test_a_pending_event_shows_as_pending(staff_auditor, event):
    pending = audit_record(actor=None, action="tests.admin.pending")
    client = client_for(staff_auditor)
    page = client.get(CHANGELIST).content.decode()
    # This one and the auditor's sign-in.
    assert AuditEvent.objects.filter(sequence__isnull=True).count() == 2 and "2 events pending" in page
    assert "pending: content matches the hash it was written with" in client.get(detail(pending)).content.decode()
    assert f'<td class="field-place">{event.sequence}</td>' in page
    assert '<td class="field-place">pending</td>' in page
