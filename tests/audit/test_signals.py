"""Sign-in, failed sign-in and sign-out are audited; a password never is."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def test_sign_in_is_audited(outsider):
    response = Client(REMOTE_ADDR="10.1.2.3").post(
        "/accounts/login/", {"username": "outsider", "password": PASSWORD}, HTTP_USER_AGENT="pytest-browser"
    )
    assert response.status_code == 302
    [event] = events("auth.login")
    assert (event.actor_type, event.actor_id, event.actor_repr) == ("user", str(outsider.pk), "outsider")
    assert (event.target_type, event.target_id) == ("auth.user", str(outsider.pk))
    assert event.data == {"username": "outsider", "ip": "10.1.2.3", "user_agent": "pytest-browser"}
    assert PASSWORD not in json.dumps(event.data)


def test_failed_sign_in_records_the_username_never_the_password(outsider):
    wrong = "not-the-password-123"
    response = Client().post("/accounts/login/", {"username": "outsider", "password": wrong})
    assert response.status_code == 200  # the form again, with an error
    [event] = events("auth.login_failed")
    assert (event.actor_type, event.actor_repr) == ("user", "anonymous")
    assert event.data["username"] == "outsider" and event.data["known_user"] is True
    assert event.target_id == str(outsider.pk)
    assert wrong not in json.dumps(event.data) and wrong not in event.target_repr
    assert not events("auth.login")


def test_failed_sign_in_of_an_unknown_user():
    Client().post("/accounts/login/", {"username": "mallory", "password": "guess-1234"})
    [event] = events("auth.login_failed")
    assert event.data["username"] == "mallory" and event.data["known_user"] is False and event.target_id == ""


def test_failed_token_request_is_audited(outsider):
    response = APIClient().post("/api/v1/auth/token/", {"username": "outsider", "password": "wrong-password-1"})
    assert response.status_code == 400
    [event] = events("auth.login_failed")
    assert event.data["username"] == "outsider" and "wrong-password-1" not in json.dumps(event.data)


def test_sign_out_is_audited(outsider):
    client = Client()
    client.force_login(outsider)
    client.post("/accounts/logout/")
    [event] = events("auth.logout")
    assert event.actor_repr == "outsider"


def test_token_sign_in_is_audited(outsider):
    response = APIClient(REMOTE_ADDR="10.4.5.6").post(
        "/api/v1/auth/token/", {"username": "outsider", "password": PASSWORD}, HTTP_USER_AGENT="pytest-api"
    )
    assert response.status_code == 200
    [event] = events("auth.login")
    assert (event.actor_type, event.actor_id, event.actor_repr) == ("user", str(outsider.pk), "outsider")
    assert event.data == {"username": "outsider", "ip": "10.4.5.6", "user_agent": "pytest-api", "via": "token"}
    assert PASSWORD not in json.dumps(event.data) and response.json()["token"] not in json.dumps(event.data)
    assert not events("auth.login_failed")
