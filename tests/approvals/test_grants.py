"""Separation of duties: a review right one gave oneself, by any path, does not let one decide.

The paths that grant ``review_agent``: the console (tests/approvals/test_operations.py and the
console's test), guardian's object-permission pages in the admin (superusers), a group holding
the right (granted there too) and joining that group in the user admin, and code. Each records
who granted (approvals.grants); the decision service asks approvals.selectors.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from guardian.shortcuts import assign_perm, remove_perm
from rest_framework.test import APIClient

from approvals.grants import SYSTEM, grants_by
from approvals.models import AccessGrant, ApprovalRequest, ApprovalStatus, Decision
from approvals.selectors import review_granted_by_another
from tests.conftest import make_user
from tests.pages import waiting_refund

pytestmark = pytest.mark.django_db


def decide(user, approval):
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=user.pk))
    return client.post(f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"}, format="json")


def refused_as_self_granted(response, approval) -> bool:
    return (
        response.status_code == 403
        and response.json()["code"] == "self_granted"
        and not Decision.objects.filter(request=approval).exists()
        and ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING
    )


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def grant_in_admin(actor, agent, *, user=None, group=None):
    """Guardian's object-permission page of the agent admin, as ``actor`` (a superuser) uses it."""
    kind, target = ("user", user) if user is not None else ("group", group)
    url = f"/admin/agents/agent/{agent.pk}/permissions/{kind}-manage/{target.pk}/"
    response = admin_client(actor).post(url, {"permissions": ["review_agent"]})
    assert response.status_code == 302, response.content[:500]


def set_groups_in_admin(actor, user, groups):
    """The user admin's change form, as ``actor`` submits it with ``groups`` chosen."""
    client = admin_client(actor)
    url = f"/admin/auth/user/{user.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    joined = user.date_joined
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "groups": [group.pk for group in groups],
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "_save": "Save",
    }
    if user.is_staff:
        data["is_staff"] = "on"
    if user.is_superuser:
        data["is_superuser"] = "on"
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response


@pytest.fixture
def root(db) -> User:
    return make_user("root", is_superuser=True, is_staff=True)


@pytest.fixture
def approval(support_agent, starter) -> ApprovalRequest:
    return waiting_refund(support_agent, starter)


def test_a_right_granted_by_another_lets_one_decide(approval, support_agent, operator, reviewer):
    with grants_by(operator):
        assign_perm("review_agent", reviewer, support_agent)
    response = decide(reviewer, approval)
    assert response.status_code == 200 and response.json()["status"] == ApprovalStatus.APPROVED


def test_a_superuser_who_grants_themselves_review_in_the_admin_cannot_decide(approval, support_agent, root, reviewer):
    grant_in_admin(root, support_agent, user=root)
    assert AccessGrant.objects.get(user=root, agent=support_agent).granted_by == root
    assert refused_as_self_granted(decide(root, approval), approval)
    # What the same superuser grants another is the other's to use.
    grant_in_admin(root, support_agent, user=reviewer)
    assert AccessGrant.objects.get(user=reviewer, agent=support_agent).granted_by == root
    assert decide(reviewer, approval).status_code == 200


def test_being_a_superuser_grants_nothing(approval, root):
    assert root.has_perm("agents.review_agent", approval.agent)  # they see everything
    assert refused_as_self_granted(decide(root, approval), approval)


def test_joining_a_reviewing_group_in_the_user_admin_does_not_let_one_decide(approval, support_agent, root):
    team = Group.objects.create(name="refund-desk")
    assign_perm("review_agent", team, support_agent)  # the deployment's (grants_by_the_system)
    # A staff member who may edit users, not a superuser: adds themselves to the group.
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["change_user", "view_user"]))
    set_groups_in_admin(clerk, clerk, [team])
    assert clerk.groups.filter(pk=team.pk).exists()
    assert AccessGrant.objects.get(user=clerk, group=team).granted_by == clerk
    assert refused_as_self_granted(decide(clerk, approval), approval)
    # Taken out of it and put back by an administrator: now it is someone else's grant.
    set_groups_in_admin(root, User.objects.get(pk=clerk.pk), [])
    assert not AccessGrant.objects.filter(user=clerk, group=team).exists()
    set_groups_in_admin(root, User.objects.get(pk=clerk.pk), [team])
    assert AccessGrant.objects.get(user=clerk, group=team).granted_by == root
    assert decide(clerk, approval).status_code == 200


def test_a_group_right_granted_by_a_member_does_not_count_for_that_member(approval, support_agent, root, reviewer):
    team = Group.objects.create(name="refund-desk")
    root.groups.add(team)  # memberships made by the system
    reviewer.groups.add(team)
    grant_in_admin(root, support_agent, group=team)
    assert AccessGrant.objects.get(group=team, agent=support_agent).granted_by == root
    assert refused_as_self_granted(decide(root, approval), approval)
    assert decide(reviewer, approval).status_code == 200  # granted to them by root


def test_an_unattributed_grant_counts_as_ones_own(approval, support_agent, reviewer, other_reviewer):
    with grants_by(None):  # code that said nothing of who grants
        assign_perm("review_agent", reviewer, support_agent)
    assert AccessGrant.objects.get(user=reviewer, agent=support_agent).granted_by is None
    assert refused_as_self_granted(decide(reviewer, approval), approval)
    # A right created without signals (guardian's bulk assign) has no record at all.
    assign_perm("review_agent", User.objects.filter(pk=other_reviewer.pk), support_agent)
    assert other_reviewer.has_perm("agents.review_agent", support_agent)
    assert not AccessGrant.objects.filter(user=other_reviewer, agent=support_agent).exists()
    assert refused_as_self_granted(decide(other_reviewer, approval), approval)


def test_records_follow_the_rights(support_agent, operator, reviewer):
    team = Group.objects.create(name="refund-desk")
    with grants_by(operator):
        assign_perm("review_agent", reviewer, support_agent)
        assign_perm("review_agent", team, support_agent)
        assign_perm("start_run", reviewer, support_agent)  # not a review right: not recorded
        reviewer.groups.add(team)
        team.user_set.add(operator)
    assert AccessGrant.objects.filter(granted_by=operator).count() == 4
    assert AccessGrant.objects.get(user=operator, group=team).granted_by == operator
    assert review_granted_by_another(user=reviewer, agent=support_agent)
    assert not review_granted_by_another(user=operator, agent=support_agent)  # their own grant, twice
    remove_perm("review_agent", reviewer, support_agent)
    remove_perm("review_agent", team, support_agent)
    assert not AccessGrant.objects.filter(agent=support_agent).exists()
    team.user_set.remove(reviewer)
    assert list(AccessGrant.objects.filter(group=team).values_list("user", flat=True)) == [operator.pk]
    team.user_set.clear()
    assert not AccessGrant.objects.filter(group=team).exists()
    with grants_by(SYSTEM):
        reviewer.groups.add(team)
    assert AccessGrant.objects.get(user=reviewer, group=team).by_system
    reviewer.groups.clear()  # "reviewers" too (make_user)
    assert not AccessGrant.objects.filter(user=reviewer).exists()


def test_the_demo_reviewers_may_decide(db):
    """seed_demo's rights are the system's, also when re-seeded over rights recorded before."""
    from django.core.management import call_command

    from agents.models import Agent

    with grants_by(None):
        call_command("seed_demo", force=True, verbosity=0)
        AccessGrant.objects.all().delete()  # as in a database seeded before grants were recorded
        call_command("seed_demo", force=True, verbosity=0)
    reviewer1 = User.objects.get(username="reviewer1")
    for agent in Agent.objects.all():
        assert review_granted_by_another(user=reviewer1, agent=agent)
