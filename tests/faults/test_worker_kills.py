"""SIGKILL workers at random points while runs step, decide and resume; nothing doubles, nothing is lost.

Two workers (prefork, two pool processes each), one ASGI server, beat (the sweeper every second).
Runs start through the API all along: ``chaos`` runs (five refunds and an email, nothing waits) and
``gated`` runs (three approvals each, decided by two reviewer bots over the API). At seeded random
points, at a tool call being executed, after a few more steps, or after a pause, one worker is
killed: either the whole worker (main process and pool: restarted by the test), or its pool
processes (the main process forks new ones). Then the load stops, the sweeper and the workers
finish, and the invariants are checked; each chaos run must have succeeded with each of its
refunds exactly once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter

import pytest

from agents.models import TERMINAL_RUN_STATUSES, LedgerEntry, OutboxEmail, Run, RunStatus, Step, ToolCall
from tests.faults.clients import Api, Loader, ReviewerBot
from tests.faults.world import CUSTOMER, build
from tests.live import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

KILLS = int(os.environ.get("FAULTS_KILLS", "52"))  # at least 50 in this scenario alone
WHOLE_WORKER_SHARE = 0.25  # the rest kill the pool processes only (a whole worker takes seconds to restart)
KILL_PHASE_SECONDS = 240  # a bound: the phase fails rather than run on (about 90 s on an idle 2-core machine)
REFUNDS = 5
IN_FLIGHT = 6  # the loader waits while this many runs are queued or running


def reached(predicate, *, timeout: float, interval: float) -> bool:
    """Whether ``predicate`` held within ``timeout`` (a kill point that never comes is no error)."""
    with contextlib.suppress(TimeoutError):
        wait_until(predicate, timeout=timeout, interval=interval, what="a kill point")
        return True
    return False


def kill_point(rng) -> str:
    """Wait for a seeded random point of the work; returns which kind it was."""
    kind = rng.choice(["tool", "steps", "pause"])
    if kind == "tool":
        if reached(lambda: ToolCall.objects.filter(status="executing").exists(), timeout=1.5, interval=0.002):
            return "tool"
        return "tool (none came)"
    if kind == "steps":
        target = Step.objects.count() + rng.randint(1, 6)
        reached(lambda: Step.objects.count() >= target, timeout=2, interval=0.005)
        return "steps"
    time.sleep(rng.uniform(0.05, 0.5))  # the fault's moment, chosen by the seed; not a synchronization
    return "pause"


def in_flight() -> int:
    return Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count()


@pytest.mark.timeout(420)
def test_workers_sigkilled_at_random_points(harness, stack):
    world = build(
        {"agents": [{"kind": "chaos", "slug": "chaos", "refunds": REFUNDS}, {"kind": "gated", "slug": "gated"}]}
    )
    server = stack.server()
    workers = [stack.worker("worker-a"), stack.worker("worker-b")]
    beat = stack.beat()
    for process in (server, *workers, beat):
        process.start()

    starter = Api(harness.ledger, server.url, world["tokens"]["starter"], name="starter")
    gated_input = {"ticket_id": world["ticket"], "customer_email": CUSTOMER, "amount": 40, "currency": "USD"}

    def make(number: int):
        return ("gated", gated_input) if number % 4 == 3 else ("chaos", {})

    bots = [
        ReviewerBot(Api(harness.ledger, server.url, world["tokens"][name], name=name), harness.rng(name))
        for name in ("r01", "r02")
    ]
    rng = harness.rng("kills")
    points: Counter[str] = Counter()
    spent: Counter[str] = Counter()  # seconds: waiting for kill points, restarting workers, refilling pools
    left_executing = left_running = 0
    loader = Loader([starter], make, limit=10_000, interval=0.1, gate=lambda: in_flight() < IN_FLIGHT)
    with contextlib.ExitStack() as running:
        running.callback(starter.close)
        for part in (*bots, loader):
            running.enter_context(part)
        phase_ends = time.monotonic() + KILL_PHASE_SECONDS
        wait_until(lambda: Step.objects.exists(), timeout=30, what="the first step")
        for _ in range(KILLS):
            assert time.monotonic() < phase_ends, f"the kill phase ran past {KILL_PHASE_SECONDS} s"
            victim = workers[rng.randrange(len(workers))]
            began = time.monotonic()
            points[kill_point(rng)] += 1
            spent["points"] += time.monotonic() - began
            began = time.monotonic()
            if rng.random() < WHOLE_WORKER_SHARE:
                victim.kill()
                harness.kill("group")
                left_executing += ToolCall.objects.filter(status="executing").count()
                left_running += Run.objects.filter(status=RunStatus.RUNNING).count()
                victim.start()
                harness.restart("worker")
                spent["restarts"] += time.monotonic() - began
            else:
                killed = victim.kill_pool()
                harness.kill("pool")
                victim.wait_pool(killed)
                spent["pools"] += time.monotonic() - began
        loader.stop.set()
        # The workers, the sweeper and the reviewers finish what the kills left.
        wait_until(
            lambda: not Run.objects.exclude(status__in=TERMINAL_RUN_STATUSES).exists(),
            timeout=120,
            interval=0.2,
            what="every run to end",
        )

    print(f"[{harness.name}] kill points {dict(points)}; calls left executing by whole-worker kills: {left_executing}")
    print(f"[{harness.name}] seconds spent: { {k: round(v, 1) for k, v in spent.items()} }")
    print(f"[{harness.name}] runs left running by whole-worker kills: {left_running}; started {len(loader.started)}")
    harness.check(settle_timeout=30)

    chaos = Run.objects.filter(agent__slug="chaos")
    assert chaos.count() >= 10
    assert dict(Counter(chaos.values_list("status", flat=True))) == {RunStatus.SUCCEEDED: chaos.count()}
    refunds: dict[int, list[float]] = {run.pk: [] for run in chaos}
    for call in ToolCall.objects.filter(run__agent__slug="chaos", tool="issue_refund"):
        refunds[call.run_id] += [float(call.arguments["amount"])] * LedgerEntry.objects.filter(
            idempotency_key=str(call.idempotency_key)
        ).count()
    expected = [float(i + 1) for i in range(REFUNDS)]
    wrong = {run_id: sorted(amounts) for run_id, amounts in refunds.items() if sorted(amounts) != expected}
    assert not wrong, f"chaos runs whose refunds are not exactly {expected}: {wrong}"
    emails = ToolCall.objects.filter(run__agent__slug="chaos", tool="send_email", status="succeeded")
    assert emails.count() == chaos.count()
    assert (
        OutboxEmail.objects.filter(
            idempotency_key__in=[str(k) for k in emails.values_list("idempotency_key", flat=True)]
        ).count()
        == chaos.count()
    )
    # No run was failed by a kill: a call interrupted mid-way is reconciled through its lookup.
    assert not Run.objects.filter(status=RunStatus.FAILED).exists(), list(
        Run.objects.filter(status=RunStatus.FAILED).values_list("pk", "error")
    )
