"""manage.py seed_demo: demo users, roles and grants; running it again changes nothing."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from guardian.shortcuts import get_perms

from agents.models import Agent
from agents.tools import registry

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_is_idempotent_and_grants_roles():
    first = seed()
    counts = (User.objects.count(), Agent.objects.count())
    second = seed()
    assert (User.objects.count(), Agent.objects.count()) == counts
    assert "reviewer1  / countersign-demo" in first and "reviewer1  / countersign-demo" in second

    roles = {
        user.username: (set(user.groups.values_list("name", flat=True)), user.is_staff) for user in User.objects.all()
    }
    assert roles == {
        "operator": ({"operators"}, True),
        "reviewer1": ({"reviewers"}, False),
        "reviewer2": ({"reviewers"}, False),
        "auditor": ({"auditors"}, True),
    }
    agents = list(Agent.objects.all())
    assert agents, "agents.demo.seed_demo_data created no agents"
    operator = User.objects.get(username="operator")
    for agent in agents:
        assert "review_agent" in get_perms(User.objects.get(username="reviewer1"), agent)
        assert "review_agent" in get_perms(User.objects.get(username="reviewer2"), agent)
        assert "start_run" in get_perms(operator, agent)
    assert all(operator.has_perm(f"agents.use_{name}") for name in registry)
    assert User.objects.get(username="auditor").check_password("countersign-demo")


def test_demo_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "another-demo-secret")
    assert "another-demo-secret" in seed()
    assert User.objects.get(username="reviewer2").check_password("another-demo-secret")
