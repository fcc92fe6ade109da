"""How long the dashboard takes with 100,000 runs, their steps and their approval requests.

Runs spread evenly over 30 days across five agents and twenty starters, four steps and one
approval request each. Prints the server time (the request through every middleware, in the
process) of each window, all agents and one; the default window must stay within 300 ms.

    make bench PYTEST_ARGS="-k dashboard"   # add DATABASE_URL=postgres://... for PostgreSQL
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Agent, Run, RunStatus, Step, ToolCall, ToolCallStatus
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus
from tests.conftest import make_user
from tests.dashboard_seed import explicit_times
from tests.pages import client_for

pytestmark = pytest.mark.django_db

RUNS = 100_000
BATCH = 5_000
DAYS = 30
BUDGET_MS = 300
STATUSES = [RunStatus.SUCCEEDED] * 7 + [RunStatus.FAILED, RunStatus.REJECTED, RunStatus.WAITING]
ENDINGS = [ApprovalStatus.APPROVED] * 6 + [ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED, ApprovalStatus.PENDING]


def seed(reviewer) -> list[Agent]:
    agents = [Agent.objects.create(slug=f"agent-{i}", name=f"Agent {i}", objective="x", scope="x") for i in range(5)]
    starters = [make_user(f"starter-{i}") for i in range(20)]
    now = timezone.now()
    spacing = timedelta(days=DAYS) / RUNS
    with explicit_times():
        for start in range(0, RUNS, BATCH):
            numbers = range(start, min(start + BATCH, RUNS))
            runs = Run.objects.bulk_create(
                Run(
                    agent=agents[n % 5],
                    started_by=starters[n % 20],
                    status=STATUSES[n % 10],
                    cost=Decimal(n % 7) / 100,
                    created_at=now - spacing * n,
                    step_count=4,
                )
                for n in numbers
            )
            Step.objects.bulk_create(
                Step(
                    run=run,
                    index=i,
                    kind=Step.Kind.REASONING,
                    latency_ms=(run.pk * 37 + i * 911) % 6000,
                    created_at=run.created_at,
                )
                for run in runs
                for i in range(4)
            )
            calls = ToolCall.objects.bulk_create(
                ToolCall(
                    run=run,
                    step=2,
                    tool="issue_refund",
                    arguments_hash="x",
                    status=ToolCallStatus.AWAITING,
                    created_at=run.created_at,
                )
                for run in runs
            )
            ApprovalRequest.objects.bulk_create(
                ApprovalRequest(
                    run=run,
                    agent_id=run.agent_id,
                    tool_call=call,
                    kind=ApprovalKind.APPROVAL,
                    tool="issue_refund",
                    arguments_hash="x",
                    risk_class="financial",
                    policy_reason="x",
                    status=(ending := ENDINGS[run.pk % 9]),
                    created_at=run.created_at,
                    decided_at=None
                    if ending == ApprovalStatus.PENDING
                    else run.created_at + timedelta(seconds=run.pk % 900),
                    decided_by=reviewer if ending in (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED) else None,
                    decided_arguments={"amount": 1} if run.pk % 12 == 0 else None,
                )
                for run, call in zip(runs, calls, strict=True)
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return agents


def server_ms(client, path: str, rounds: int = 5) -> tuple[float, int]:
    client.get(path)  # warm: templates compiled, the session read once
    times = []
    for _ in range(rounds):
        with CaptureQueriesContext(connection) as queries:
            began = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    return statistics.median(times), len(queries)


def test_dashboard_with_100k_runs(operator, reviewer):
    began = time.perf_counter()
    agents = seed(reviewer)
    print(f"\nseeded {Run.objects.count()} runs, {Step.objects.count()} steps in {time.perf_counter() - began:.0f} s")
    client = client_for(operator)
    results = {}
    for window in ("24h", "7d", "30d"):
        for path in ("/dashboard/", f"/dashboard/agents/{agents[0].slug}/"):
            ms, queries = server_ms(client, f"{path}?window={window}")
            results[path, window] = ms
            print(f"{connection.vendor:10} {path:30} {window:4} {ms:7.1f} ms  {queries} queries")
    assert results["/dashboard/", "24h"] <= BUDGET_MS
    assert results[f"/dashboard/agents/{agents[0].slug}/", "24h"] <= BUDGET_MS
