"""Demo users, agents and grants for ``make run``; safe to run again (nothing is duplicated)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from guardian.shortcuts import assign_perm, remove_perm

from approvals.grants import SYSTEM, grants_by
from audit.services import audited_atomic

DEFAULT_DEMO_PASSWORD = "countersign-demo"


@dataclass(frozen=True)
class DemoUser:
    username: str
    group: str
    is_staff: bool
    role: str


DEMO_USERS = (
    DemoUser("operator", "operators", True, "defines agents, sets autonomy, pulls the kill switch"),
    DemoUser("reviewer1", "reviewers", False, "decides waiting actions in the inbox"),
    DemoUser("reviewer2", "reviewers", False, "second reviewer (four eyes, two approvals)"),
    DemoUser("auditor", "auditors", True, "reads the audit log in the admin"),
)


def demo_password() -> str:
    return os.environ.get("DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD


def demo_logins() -> list[str]:
    password = demo_password()
    return [f"  {user.username:<10} / {password:<18} {user.role}" for user in DEMO_USERS]


class Command(BaseCommand):
    help = (
        "Create the demo users (operator, reviewer1, reviewer2, auditor), the demo agents and their grants. "
        "Resets the demo users' passwords to the published one, so it runs only with DEBUG=1 or --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off (the demo users get the published password).",
        )

    def handle(self, *args: Any, force: bool = False, **options: Any) -> None:
        if not (settings.DEBUG or force):
            # The demo password is printed and documented: on a real deployment it would open
            # the operator's and the auditor's accounts (and reset them if someone changed them).
            raise CommandError(
                "seed_demo resets the demo users (operator, reviewer1, reviewer2, auditor) to a published "
                "password and DEBUG is off: run it with DEBUG=1 (as make run does) on a development "
                "machine, or pass --force if you really want demo users here."
            )
        # The chain lock first: the seed writes audit events after it has changed rows.
        # The demo's groups and review rights are the deployment's, not any user's own grant
        # (approvals.grants): reviewer1 and reviewer2 may decide.
        with audited_atomic(), grants_by(SYSTEM):
            users = {spec.username: self.user_upsert(spec) for spec in DEMO_USERS}
            lines = self.agents_seed()
            lines += self.grants(users)
        for line in lines:
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS("Demo logins (username / password):"))
        for line in demo_logins():
            self.stdout.write(line)

    def user_upsert(self, spec: DemoUser) -> User:
        user, _ = User.objects.get_or_create(
            username=spec.username, defaults={"email": f"{spec.username}@countersign.local"}
        )
        user.is_staff = spec.is_staff
        user.is_active = True
        # The printed password always works, even after someone changed it in the demo.
        user.set_password(demo_password())
        user.save()
        # The roles migration creates the groups; get_or_create keeps this working without it.
        group, _ = Group.objects.get_or_create(name=spec.group)
        # Removed and added again, so the membership is recorded as the system's even in a
        # database seeded before grants were recorded (approvals.grants).
        user.groups.remove(group)
        user.groups.add(group)
        return user

    def agents_seed(self) -> list[str]:
        from agents.demo import data as demo

        seed = getattr(demo, "seed_demo_data", None)
        return list(seed()) if seed is not None else []

    def grants(self, users: dict[str, User]) -> list[str]:
        from agents.models import Agent
        from agents.tools import registry

        agents = list(Agent.objects.all())
        operator = users["operator"]
        for agent in agents:
            for reviewer in (users["reviewer1"], users["reviewer2"]):
                remove_perm("review_agent", reviewer, agent)  # recorded anew as the system's, as above
                assign_perm("review_agent", reviewer, agent)
            assign_perm("start_run", operator, agent)
        # The built-in tools, and the MCP tools the demo agents hold (time.get_current_time).
        names = set(registry) | {name for agent in agents for name in agent.tools}
        codenames = [f"use_{name}" for name in sorted(names)]
        tool_perms = Permission.objects.filter(content_type__app_label="agents", codename__in=codenames)
        operator.user_permissions.add(*tool_perms)
        return [
            f"grants: reviewer1, reviewer2 review {len(agents)} agent(s); operator starts runs of them "
            f"and may use {tool_perms.count()} tool(s)"
        ]
