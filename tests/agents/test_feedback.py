"""Feedback on a finished run: who may give it, when, what it takes, the audit, the trace page."""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from agents.feedback import FeedbackNotAllowed, RunNotFinished, run_feedback_give
from agents.models import RunFeedback
from audit.models import AuditEvent
from tests.agents.feedback_runs import CUSTOMER_EMAIL, run_finished, run_started
from tests.conftest import make_user
from tests.pages import SCRIPT, client_for, csrf_token

pytestmark = pytest.mark.django_db

FEEDBACK_EVENTS = ("agents.run.feedback_given", "agents.run.feedback_changed")


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def finished(support_agent, starter, assigned_reviewer):
    return run_finished(support_agent, starter, assigned_reviewer)


def feedback_events():
    return list(AuditEvent.objects.filter(action__in=FEEDBACK_EVENTS).order_by("id"))


# --- The API ----------------------------------------------------------------------------------------


def test_starter_and_reviewer_give_feedback_and_read_it(finished, starter, assigned_reviewer):
    url = f"/api/v1/runs/{finished.pk}/feedback/"
    up = api_for(starter).post(url, {"rating": "up"}, format="json")
    assert up.status_code == 200, up.json()
    assert up.json()["rating"] == "up" and up.json()["user"] == starter.username and up.json()["correction"] == ""
    down = api_for(assigned_reviewer).post(
        url, {"rating": "down", "correction": "Refund 30 USD: the kettle was on sale."}, format="json"
    )
    assert down.status_code == 200, down.json()
    listed = api_for(starter).get(url).json()
    assert [(item["user"], item["rating"]) for item in listed] == [
        (starter.username, "up"),
        (assigned_reviewer.username, "down"),
    ]
    assert listed[1]["correction"] == "Refund 30 USD: the kettle was on sale."
    given = feedback_events()
    assert [(event.action, event.actor_id, event.run_id) for event in given] == [
        ("agents.run.feedback_given", str(starter.pk), finished.pk),
        ("agents.run.feedback_given", str(assigned_reviewer.pk), finished.pk),
    ]
    assert given[1].data["rating"] == "down" and given[1].agent_slug == "support"


def test_giving_it_again_replaces_it_and_the_same_again_changes_nothing(finished, starter):
    url = f"/api/v1/runs/{finished.pk}/feedback/"
    client = api_for(starter)
    assert client.post(url, {"rating": "up"}, format="json").status_code == 200
    changed = client.post(url, {"rating": "down", "correction": "  Should have asked first.  "}, format="json")
    assert changed.status_code == 200 and changed.json()["correction"] == "Should have asked first."
    [feedback] = RunFeedback.objects.filter(run=finished)
    assert (feedback.rating, feedback.correction) == ("down", "Should have asked first.")
    again = client.post(url, {"rating": "down", "correction": "Should have asked first."}, format="json")
    assert again.status_code == 200 and RunFeedback.objects.filter(run=finished).count() == 1
    events = feedback_events()
    assert [event.action for event in events] == ["agents.run.feedback_given", "agents.run.feedback_changed"]
    assert events[1].data["old"] == {"rating": "up", "correction": ""}
    assert events[1].data["rating"] == "down"


def test_the_correction_is_masked_in_the_audit_log(finished, starter):
    text = f"Write to {CUSTOMER_EMAIL} and refund card 4111 1111 1111 1111 instead."
    run_feedback_give(run=finished, user=starter, rating="down", correction=text)
    [event] = feedback_events()
    logged = event.data["correction"]
    assert CUSTOMER_EMAIL not in logged and "4111 1111 1111 1111" not in logged
    assert "j***@example.com" in logged and "****1111" in logged
    # The row itself keeps what the person wrote.
    assert RunFeedback.objects.get().correction == text


def test_who_may_not_give_feedback(finished, support_agent, other_reviewer, outsider, auditor):
    other_operator = make_user("other_operator", "operators")
    url = f"/api/v1/runs/{finished.pk}/feedback/"
    # Those who may not read the run learn nothing of it: the same 404 as an unknown run.
    for user in (other_reviewer, outsider):
        for response in (api_for(user).post(url, {"rating": "up"}, format="json"), api_for(user).get(url)):
            assert response.status_code == 404 and response.json()["code"] == "not_found"
    unknown = api_for(outsider).post("/api/v1/runs/999999/feedback/", {"rating": "up"}, format="json")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "No such run."
    # Those who may read it but neither started it nor review its agent: 403.
    for user in (auditor, other_operator):
        refused = api_for(user).post(url, {"rating": "up"}, format="json")
        assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"
        assert api_for(user).get(url).status_code == 200
    with pytest.raises(FeedbackNotAllowed):
        run_feedback_give(run=finished, user=auditor, rating="up")
    assert not RunFeedback.objects.exists() and not feedback_events()
    # A reviewer of the agent may, without having started the run or decided any of it.
    assign_perm("review_agent", other_reviewer, support_agent)
    allowed = api_for(other_reviewer).post(url, {"rating": "up"}, format="json")
    assert allowed.status_code == 200


def test_a_run_not_finished_takes_no_feedback(support_agent, starter, assigned_reviewer):
    waiting = run_started(support_agent, starter)
    assert waiting.status == "waiting"
    response = api_for(starter).post(f"/api/v1/runs/{waiting.pk}/feedback/", {"rating": "up"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "run_not_finished" and response.json()["status"] == "waiting"
    with pytest.raises(RunNotFinished):
        run_feedback_give(run=waiting, user=assigned_reviewer, rating="down", correction="too early")
    assert not RunFeedback.objects.exists() and not feedback_events()


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "rating"),
        ({"rating": "meh"}, "rating"),
        ({"rating": 1}, "rating"),
        ({"rating": None}, "rating"),
        ({"rating": "up", "correction": 5}, "correction"),
        ({"rating": "up", "correction": ["a"]}, "correction"),
        ({"rating": "up", "correction": "x" * (RunFeedback.CORRECTION_MAX_LENGTH + 1)}, "correction"),
    ],
)
def test_bad_feedback_is_400_and_changes_nothing(finished, starter, body, field):
    client = api_for(starter)
    client.post(f"/api/v1/runs/{finished.pk}/feedback/", {"rating": "up", "correction": "kept"}, format="json")
    response = client.post(f"/api/v1/runs/{finished.pk}/feedback/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and field in response.json()["errors"]
    [feedback] = RunFeedback.objects.all()
    assert (feedback.rating, feedback.correction) == ("up", "kept")
    assert len(feedback_events()) == 1


@pytest.mark.parametrize(
    "raw,code",
    [
        (b'{"rating": "up",', "parse_error"),
        (b'["up"]', "invalid"),
        (b'{"rating": "up", "rating": "down"}', "duplicate_key"),
    ],
)
def test_malformed_bodies_are_400(finished, starter, raw, code):
    response = api_for(starter).post(f"/api/v1/runs/{finished.pk}/feedback/", raw, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == code
    assert not RunFeedback.objects.exists()


def test_the_service_refuses_what_the_api_would(finished, starter):
    from agents.feedback import FeedbackInvalid

    with pytest.raises(FeedbackInvalid) as refused:
        run_feedback_give(run=finished, user=starter, rating="sideways", correction="x" * 5000)
    assert set(refused.value.details["errors"]) == {"rating", "correction"}
    assert not RunFeedback.objects.exists()


# --- The trace page ---------------------------------------------------------------------------------


def test_the_page_form_needs_its_csrf_token_and_escapes_the_correction(finished, starter, assigned_reviewer):
    page_url = f"/runs/{finished.pk}/"
    post_url = f"/runs/{finished.pk}/feedback/"
    client = client_for(starter, csrf=True)
    page = client.get(page_url)
    assert page.status_code == 200 and 'action="' + post_url + '"' in page.text
    assert 'name="rating" value="down"' in page.text and 'name="correction"' in page.text
    forged = client.post(post_url, {"rating": "down", "correction": "forged"})
    assert forged.status_code == 403 and not RunFeedback.objects.exists()
    token = csrf_token(client, page_url)
    sent = client.post(post_url, {"rating": "down", "correction": SCRIPT, "csrfmiddlewaretoken": token})
    assert sent.status_code == 302 and sent["Location"] == page_url + "#feedback"
    assert RunFeedback.objects.get().correction == SCRIPT
    shown = client.get(page_url).text
    assert SCRIPT not in shown and "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in shown
    assert "your feedback on this run is saved" in shown and 'value="down" aria-pressed="true"' in shown
    # The reviewer's page shows the starter's feedback, and a form of their own.
    reviewer_page = client_for(assigned_reviewer).get(page_url)
    assert reviewer_page.context["feedback"][0].user_id == starter.pk and reviewer_page.context["my_feedback"] is None
    assert SCRIPT not in reviewer_page.text


def test_the_page_shows_errors_and_changes_nothing(finished, starter):
    client = client_for(starter)
    bad = client.post(f"/runs/{finished.pk}/feedback/", {"rating": "sideways", "correction": "x"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text and "sideways" in bad.text
    long = client.post(
        f"/runs/{finished.pk}/feedback/", {"rating": "up", "correction": "x" * (RunFeedback.CORRECTION_MAX_LENGTH + 1)}
    )
    assert long.status_code == 400 and "at most 4000 characters" in long.text
    assert not RunFeedback.objects.exists() and not feedback_events()


def test_the_page_of_a_running_run_has_no_form_and_refuses_a_post(support_agent, starter):
    waiting = run_started(support_agent, starter)
    client = client_for(starter)
    page = client.get(f"/runs/{waiting.pk}/")
    assert page.status_code == 200 and 'name="rating"' not in page.text and 'id="feedback-later"' in page.text
    posted = client.post(f"/runs/{waiting.pk}/feedback/", {"rating": "up"})
    assert posted.status_code == 409 and "feedback is given once it has finished" in posted.text
    assert not RunFeedback.objects.exists()


def test_the_page_post_follows_who_may(finished, other_reviewer, auditor):
    assert client_for(other_reviewer).post(f"/runs/{finished.pk}/feedback/", {"rating": "up"}).status_code == 404
    refused = client_for(auditor).post(f"/runs/{finished.pk}/feedback/", {"rating": "up"})
    assert refused.status_code == 403
    auditor_page = client_for(auditor).get(f"/runs/{finished.pk}/")
    assert auditor_page.status_code == 200 and 'name="rating"' not in auditor_page.text
    assert client_for(auditor).get(f"/runs/{finished.pk}/feedback/").status_code == 405
    assert not RunFeedback.objects.exists()
