"""The people, agents and credentials a bench run works with, and runs brought to a checkpoint.

Made through the services (agent_upsert, run_create, run_advance), as the product makes them:
only the 100,000-row fills (bench/fill.py) go around them, in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from guardian.shortcuts import assign_perm
from pydantic import BaseModel
from rest_framework.authtoken.models import Token

from agents.definitions import agent_upsert
from agents.demo.data import RESEARCH_AGENT, SUPPORT_AGENT, rules_seed
from agents.models import Agent, KnowledgeArticle, RunStatus, Ticket
from agents.runtime import run_advance, run_create
from agents.tools import Risk, Tool, ToolContext, register
from approvals.grants import SYSTEM, grants_by
from approvals.models import ApprovalRequest, ApprovalStatus

NOOP_TOOL = "bench_noop"
NOOP_STEPS = 20
# A refund over 500 needs a person (the shipped rule): every such run stops at a checkpoint.
CHECKPOINT_INPUT = {"customer_email": "jane@example.com", "amount": 600, "currency": "USD"}


class _NoopIn(BaseModel):
    step: int = 0


class _NoopOut(BaseModel):
    step: int


@dataclass
class World:
    reviewer: User
    operator: User
    support: Agent
    research: Agent
    noop: Agent
    ticket_id: int
    reviewer_token: str
    reviewer_cookie: str
    operator_cookie: str
    noop_calls: list[float]


def noop_tool_register(calls: list[float]) -> None:
    """A read tool that does nothing but note when it ran: the gaps between its calls are the
    orchestration of one step (reason, check, record, execute) with no tool work in them."""
    import time

    def noop(args: _NoopIn, context: ToolContext) -> dict[str, Any]:
        calls.append(time.perf_counter())
        return {"step": args.step}

    register(Tool(NOOP_TOOL, "Does nothing (benchmark).", _NoopIn, _NoopOut, Risk.READ, True, noop))


def noop_agent_definition() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"id": f"s{i}", "tool": NOOP_TOOL, "arguments": {"step": i}, "rationale": "Benchmark step."}
        for i in range(NOOP_STEPS)
    ]
    steps.append({"final": {"done": True}})
    return {
        "slug": "bench-noop",
        "name": "Benchmark no-op agent",
        "objective": "Take steps that do nothing.",
        "scope": "Read-only.",
        "tools": [NOOP_TOOL],
        "autonomy_level": 4,
        "max_steps": NOOP_STEPS + 5,
        "input_schema": {"type": "object"},
        "playbook": {"steps": steps},
    }


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def _user(username: str, group: str) -> User:
    user = User.objects.create(username=username, email=f"{username}@example.com")
    user.set_unusable_password()
    user.save()
    user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def world_create() -> World:
    calls: list[float] = []
    noop_tool_register(calls)
    agent_type = ContentType.objects.get_for_model(Agent)
    with grants_by(SYSTEM):
        KnowledgeArticle.objects.create(title="Refund policy", body="Refunds within 30 days.")
        ticket = Ticket.objects.create(subject="Broken kettle", customer_email="jane@example.com")
        rules_seed()
        support, _ = agent_upsert(SUPPORT_AGENT)
        research, _ = agent_upsert(RESEARCH_AGENT)
        Permission.objects.get_or_create(content_type=agent_type, codename=f"use_{NOOP_TOOL}", defaults={"name": "x"})
        noop, _ = agent_upsert(noop_agent_definition())
        reviewer = _user("bench_reviewer", "reviewers")
        operator = _user("bench_operator", "operators")
        assign_perm("review_agent", reviewer, support)
        tools = {*support.tools, *research.tools, NOOP_TOOL}
        operator.user_permissions.add(
            *Permission.objects.filter(content_type=agent_type, codename__in=[f"use_{t}" for t in tools])
        )
    operator = User.objects.get(pk=operator.pk)  # no stale permission cache
    return World(
        reviewer=reviewer,
        operator=operator,
        support=support,
        research=research,
        noop=noop,
        ticket_id=ticket.pk,
        reviewer_token=Token.objects.create(user=reviewer).key,
        reviewer_cookie=session_cookie(reviewer),
        operator_cookie=session_cookie(operator),
        noop_calls=calls,
    )


def checkpoint_reach(world: World) -> ApprovalRequest:
    """A support run taken to its refund checkpoint in this process: the approval request's
    commit (and its websocket push) happens here, where the bench can time it."""
    run = run_create(
        agent=world.support, user=world.operator, payload={"ticket_id": world.ticket_id, **CHECKPOINT_INPUT}
    )
    run_advance(run_id=run.pk)
    return ApprovalRequest.objects.get(run=run, status=ApprovalStatus.PENDING)


def runs_waiting() -> list[ApprovalRequest]:
    return list(
        ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, run__status=RunStatus.WAITING).order_by("pk")
    )
