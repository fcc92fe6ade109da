from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, User
from django.test import override_settings

pytest_plugins = ["tests.live", "tests.outage"]

PASSWORD = "correct-horse-battery"
# What config/settings.py sets under COUNTERSIGN_FAST_PASSWORD_HASHER=1, the variable tests/live.py
# gives the worker and the ASGI server so they verify the passwords hashed here.
FAST_PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]


@pytest.fixture(scope="session", autouse=True)
def fast_password_hasher() -> Iterator[None]:
    """PBKDF2 costs about a second a user made: the suite hashes with MD5. The settings are
    loaded before this file, hence an override here rather than the variable."""
    with override_settings(PASSWORD_HASHERS=FAST_PASSWORD_HASHERS):
        yield


@pytest.fixture(scope="session", autouse=True)
def flush_retries_a_deadlock() -> Iterator[None]:
    """The TRUNCATE that empties the database after a transactional test locks every table; a
    live server still answering the test's last request (its read holds one table, it waits for
    another) makes PostgreSQL abort one of the two. The flush's transaction is rolled back
    whole, so it is run again once the other has finished."""
    from django.db import OperationalError
    from django.db.backends.base.operations import BaseDatabaseOperations

    original = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: BaseDatabaseOperations, sql_list: list[str]) -> None:
        for attempt in range(5):
            try:
                original(self, sql_list)
                return
            except OperationalError as exc:
                if "deadlock detected" not in str(exc) or attempt == 4:
                    raise

    BaseDatabaseOperations.execute_sql_flush = execute_sql_flush  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseDatabaseOperations.execute_sql_flush = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def grants_by_the_system() -> Iterator[None]:
    """Rights a test sets up itself (assign_perm, groups.add) are the deployment's, as seed_demo's
    are: recorded as granted by the system (approvals.grants), so its reviewers may decide.
    Requests inside a test still record their own user (the console, the admin)."""
    from approvals.grants import SYSTEM, grants_by

    with grants_by(SYSTEM):
        yield


@pytest.fixture(autouse=True)
def cache_clear() -> None:
    """The cache (Redis, shared with other processes) holds the sign-in limits: every test
    starts with no failures counted. Only the cache's own keys go, never the broker's."""
    from django.core.cache import cache

    cache.clear()


def make_user(username: str, *groups: str, **extra) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.com", **extra)
    for name in groups:
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)
    return user


@pytest.fixture
def reviewer(db) -> User:
    return make_user("reviewer", "reviewers")


@pytest.fixture
def other_reviewer(db) -> User:
    return make_user("other_reviewer", "reviewers")


@pytest.fixture
def operator(db) -> User:
    return make_user("operator", "operators")


@pytest.fixture
def auditor(db) -> User:
    return make_user("auditor", "auditors")


@pytest.fixture
def outsider(db) -> User:
    return make_user("outsider")


def grant_tools(user: User, tools) -> None:
    from django.contrib.auth.models import Permission

    perms = Permission.objects.filter(content_type__app_label="agents", codename__in=[f"use_{t}" for t in tools])
    user.user_permissions.add(*perms)
    for cache in ("_perm_cache", "_user_perm_cache", "_countersign_groups"):
        user.__dict__.pop(cache, None)


@pytest.fixture
def support_agent(db):
    from agents.definitions import agent_upsert
    from agents.demo.data import SUPPORT_AGENT, rules_seed
    from agents.models import KnowledgeArticle, Ticket

    KnowledgeArticle.objects.create(title="Refund policy", body="Refunds within 30 days.")
    Ticket.objects.create(subject="Broken kettle", customer_email="jane@example.com")
    rules_seed()
    agent, _ = agent_upsert(SUPPORT_AGENT)
    return agent


@pytest.fixture
def starter(operator, support_agent) -> User:
    """The operator who starts runs; holds every tool permission the support agent needs."""
    grant_tools(operator, support_agent.tools)
    return User.objects.get(pk=operator.pk)


@pytest.fixture
def assigned_reviewer(reviewer, support_agent) -> User:
    from guardian.shortcuts import assign_perm

    assign_perm("review_agent", reviewer, support_agent)
    return User.objects.get(pk=reviewer.pk)


@pytest.fixture
def doorbells(monkeypatch) -> list[tuple[str, int]]:
    """Keep run tasks off the real broker in a transactional test that drives runs itself:
    a live worker from an earlier test would otherwise advance them too, and its writes could
    land in a later test. Records (task, run id) instead: "advance" or "resume"."""
    from config import doorbell

    rung: list[tuple[str, int]] = []
    names = {doorbell.ADVANCE_RUN: "advance", doorbell.RESUME_RUN: "resume"}
    real_send = doorbell.send

    def send(task_name: str, *args: int, **kwargs) -> bool:
        if task_name in names:
            rung.append((names[task_name], args[0]))
            return True
        return real_send(task_name, *args, **kwargs)

    monkeypatch.setattr(doorbell, "send", send)
    return rung
