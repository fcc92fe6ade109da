"""The people and agents of a fault scenario, written to the database.

``build(spec)`` runs in the test process (on the test database) or, for a database the test
process is not connected to (the private PostgreSQL), as ``python -m tests.faults.world`` with
the spec as JSON on stdin and the world as JSON on stdout.

Agents (scripted reasoner, demo tools):

- ``chaos``: level 4, ``refunds`` refunds of 1, 2, ... and an email; nothing waits for a person,
  so a worker goes step after step: the one to kill.
- ``gated``: the demo support agent at level 2: its refund, email and ticket update each wait for
  approval (three decisions a run).
- ``expiring``: level 2, one refund that waits ``deadline`` seconds, then expires (rejected: the
  run ends ``rejected``).
- ``pair``: level 4 with a rule that refunds over 1000 need two approvals.
"""

from __future__ import annotations

import json
import sys
from typing import Any

PASSWORD = "correct-horse-battery"  # tests.conftest.PASSWORD, for the sign-in of websocket clients
CUSTOMER = "jane@example.com"


def agent_definition(kind: str, slug: str, **options: Any) -> dict[str, Any]:
    from agents.demo.data import SUPPORT_AGENT

    if kind == "chaos":
        refunds = int(options.get("refunds", 6))
        steps: list[dict[str, Any]] = [
            {"id": f"r{i}", "tool": "issue_refund", "arguments": {"amount": i + 1, "reason": f"part {i + 1}"}}
            for i in range(refunds)
        ]
        steps.append(
            {"id": "mail", "tool": "send_email", "arguments": {"to": CUSTOMER, "subject": "Refunds", "body": "Done."}}
        )
        steps.append({"final": {"refunds": refunds}})
        return {
            "slug": slug,
            "name": slug,
            "objective": "Refund in parts, then tell the customer.",
            "scope": "fault tests",
            "tools": ["issue_refund", "send_email"],
            "autonomy_level": 4,
            "max_steps": 4 * refunds + 10,
            "playbook": {"steps": steps},
        }
    if kind == "gated":
        return {**SUPPORT_AGENT, "slug": slug, "name": slug}
    if kind == "expiring":
        deadline = int(options.get("deadline", 2))
        return {
            "slug": slug,
            "name": slug,
            "objective": "One refund, decided or expired.",
            "scope": "fault tests",
            "tools": ["issue_refund"],
            "autonomy_level": 2,
            "approval_deadline_seconds": deadline,
            "approval_sla_seconds": deadline,
            "on_reject": "stop",
            "expiry_action": "reject",
            "playbook": {
                "steps": [
                    {"id": "refund", "tool": "issue_refund", "arguments": {"amount": "{{input.amount}}"}},
                    {"final": {"refund": "{{steps.refund.status}}"}},
                ]
            },
        }
    if kind == "pair":
        return {
            "slug": slug,
            "name": slug,
            "objective": "One large refund: two people approve it.",
            "scope": "fault tests",
            "tools": ["issue_refund"],
            "autonomy_level": 4,
            "on_reject": "stop",
            "playbook": {
                "steps": [
                    {"id": "refund", "tool": "issue_refund", "arguments": {"amount": 2000}},
                    {"final": {"refund": "{{steps.refund.status}}"}},
                ]
            },
        }
    raise ValueError(f"unknown agent kind {kind!r}")


def build(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: {"agents": [{"kind", "slug", ...options}], "reviewers": N,
    "only": {reviewer index: [slugs]}} (reviewers not in "only" review every agent).

    The rights are the deployment's, granted by the system (as seed_demo's are), so that the
    separation of duties lets the reviewers decide; in the test process tests/conftest.py declares
    that already, in a child process this does."""
    try:
        from approvals.grants import SYSTEM, grants_by
    except ImportError:  # a tree without approvals.grants: rights carry no grantor
        return _build(spec)
    with grants_by(SYSTEM):
        return _build(spec)


def _build(spec: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth.models import Group, Permission, User
    from guardian.shortcuts import assign_perm
    from rest_framework.authtoken.models import Token

    from agents.definitions import agent_upsert
    from agents.demo.models import KnowledgeArticle, Ticket
    from approvals.models import BusinessRule

    KnowledgeArticle.objects.create(title="Refund policy", body="Refunds within 30 days.")
    ticket = Ticket.objects.create(subject="Broken kettle", customer_email=CUSTOMER)
    operators, _ = Group.objects.get_or_create(name="operators")
    reviewers, _ = Group.objects.get_or_create(name="reviewers")

    agents = {}
    for item in spec["agents"]:
        options = {key: value for key, value in item.items() if key not in {"kind", "slug"}}
        agent, _ = agent_upsert(agent_definition(item["kind"], item["slug"], **options))
        agents[agent.slug] = agent
        if item["kind"] == "pair":
            BusinessRule.objects.create(
                agent=agent,
                tool="issue_refund",
                field="amount",
                operator=">",
                value=1000,
                effect="require_two_approvals",
                note="two people for large refunds",
            )

    def user(username: str, group: Group) -> User:
        made = User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.com")
        made.groups.add(group)
        return made

    starter = user("starter", operators)
    tools = {tool for agent in agents.values() for tool in agent.tools}
    starter.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="agents", codename__in=[f"use_{t}" for t in tools])
    )
    users = {"starter": starter}
    only = {int(key): value for key, value in (spec.get("only") or {}).items()}
    for number in range(1, int(spec.get("reviewers", 2)) + 1):
        reviewer = user(f"r{number:02d}", reviewers)
        users[reviewer.username] = reviewer
        for slug in only.get(number, list(agents)):
            assign_perm("review_agent", reviewer, agents[slug])
    return {
        "ticket": ticket.pk,
        "agents": {slug: agent.pk for slug, agent in agents.items()},
        "users": {name: made.pk for name, made in users.items()},
        "tokens": {name: Token.objects.create(user=made).key for name, made in users.items()},
        "reviewers": [name for name in users if name != "starter"],
        "may_review": {name: only.get(int(name[1:]), list(agents)) for name in users if name != "starter"},
    }


def main() -> int:
    import django

    django.setup()
    print(json.dumps(build(json.loads(sys.stdin.read()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
