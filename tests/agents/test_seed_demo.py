"""manage.py seed_demo: demo users, roles and grants; running it again changes nothing."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from guardian.shortcuts import get_perms

from agents.models import Agent
from agents.tools import registry

pytestmark = pytest.mark.django_db


def seed(**options) -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, **{"force": True, **options})
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


def test_refused_with_debug_off_unless_forced(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match=r"published password and DEBUG is off: run it with DEBUG=1 .* --force"):
        seed(force=False)
    assert not User.objects.exists()
    assert "reviewer1  / countersign-demo" in seed(force=True)


def test_runs_with_debug_on_as_make_run_sets_it(settings):
    settings.DEBUG = True
    assert "reviewer1  / countersign-demo" in seed(force=False)


def test_refusal_on_the_command_line(tmp_path):
    """What a deployment sees: DEBUG off, no --force, exit code 1 and the message, nothing written."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(DEBUG="0", SECRET_KEY="x" * 50, COUNTERSIGN_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "CommandError: seed_demo resets the demo users" in result.stderr
