from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from guardian.shortcuts import assign_perm

from agents import runtime
from agents.models import Agent, Run, RunStatus, Ticket
from agents.selectors import agents_overview, review_grants_by_agent

pytestmark = pytest.mark.django_db


def test_the_overview_counts_each_agent_in_one_query(support_agent, starter, django_assert_num_queries):
    for slug in ("second", "third"):
        Agent.objects.create(slug=slug, name=slug, objective="o", scope="s")
    ticket = Ticket.objects.first()
    payload = {"ticket_id": ticket.pk, "customer_email": "jane@example.com", "amount": 10}
    failed = runtime.run_create(agent=support_agent, user=starter, payload=payload)
    runtime.run_create(agent=support_agent, user=starter, payload=payload)
    Run.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)
    with django_assert_num_queries(1):
        agents = agents_overview(since=timezone.now() - timedelta(hours=24))
    counts = {agent.slug: (agent.runs_24h, agent.failed_24h, agent.pending_count) for agent in agents}
    assert counts == {"second": (0, 0, 0), "support": (2, 1, 0), "third": (0, 0, 0)}
    later = agents_overview(since=timezone.now() + timedelta(seconds=1))
    assert {agent.slug: agent.runs_24h for agent in later}["support"] == 0


def test_review_grants_list_users_and_groups_by_agent(support_agent, reviewer, other_reviewer):
    from django.contrib.auth.models import Group

    leads = Group.objects.create(name="leads")
    assign_perm("review_agent", reviewer, support_agent)
    assign_perm("review_agent", other_reviewer, support_agent)
    assign_perm("review_agent", leads, support_agent)
    grants = review_grants_by_agent()
    assert grants == {str(support_agent.pk): {"users": ["other_reviewer", "reviewer"], "groups": ["leads"]}}
