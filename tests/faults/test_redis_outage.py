"""Stop Redis under load and start it again empty: what was acknowledged meanwhile still happens.

The scenario's own Redis (never the machine's) is SIGKILLed while runs start and reviewers decide
over the API; it comes back after a seeded 1.5-3 s with nothing in it: no queued or unacknowledged
task, no channel-layer group. The API keeps answering (a failed enqueue is logged, not raised);
the sweeper (beat, every second) rings again for the runs and decisions whose doorbell was lost;
websocket clients that reconnect with their last seq hold exactly the database's pending set.
"""

from __future__ import annotations

import threading
import time

import pytest

from agents.models import TERMINAL_RUN_STATUSES, Run, RunStatus
from approvals.models import ApprovalRequest
from tests.faults.clients import Api, Loader, LoopThread, ReviewerBot, make_clients, sign_in
from tests.faults.world import CUSTOMER, build
from tests.live import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

WEBSOCKET_USERS = ["r03", "r04", "r05", "r06"]


def in_flight() -> int:
    return Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count()


@pytest.mark.timeout(300)
def test_redis_stopped_under_load_and_restarted_empty(harness, stack):
    world = build(
        {
            "agents": [{"kind": "chaos", "slug": "chaos", "refunds": 3}, {"kind": "gated", "slug": "gated"}],
            "reviewers": 6,
        }
    )
    redis = stack.private_redis
    server, worker, beat = stack.server(), stack.worker(), stack.beat()
    for process in (server, worker, beat):
        process.start()

    cookies = {name: f"sessionid={sign_in(server.url, name).cookies['sessionid']}" for name in WEBSOCKET_USERS}
    clients = make_clients(cookies, world["may_review"], [f"{name}#{n}" for name in WEBSOCKET_USERS for n in (1, 2)])
    loop = LoopThread()
    stop_sockets = threading.Event()
    for number, client in enumerate(clients):
        if number % 2:
            loop.spawn(client.churn([server], harness.rng(client.name), stop_sockets, mean=1.0))
        else:
            loop.spawn(client.steady(server, stop_sockets))

    starter = Api(harness.ledger, server.url, world["tokens"]["starter"], name="starter")
    gated_input = {"ticket_id": world["ticket"], "customer_email": CUSTOMER, "amount": 25, "currency": "USD"}
    bots = [
        ReviewerBot(Api(harness.ledger, server.url, world["tokens"][name], name=name), harness.rng(name))
        for name in ("r01", "r02")
    ]
    rng = harness.rng("outage")
    try:
        with Loader(
            [starter],
            lambda n: ("gated", gated_input) if n % 2 else ("chaos", {}),
            limit=10_000,
            interval=0.1,
            gate=lambda: in_flight() < 6,
        ) as loader:
            for bot in bots:
                bot.__enter__()
            wait_until(lambda: len(harness.ledger.decisions) >= 4, timeout=60, what="the first decisions")

            before = dict(harness.ledger.outcomes)
            redis.kill()
            down_for = rng.uniform(1.5, 3.0)
            time.sleep(down_for)  # the outage's length, chosen by the seed; not a synchronization
            during = {k: v - before.get(k, 0) for k, v in harness.ledger.outcomes.items() if v != before.get(k, 0)}
            redis.start()
            harness.restart("redis")
            print(f"[{harness.name}] Redis down for {down_for:.1f} s; API outcomes meanwhile: {during}")

            decided = len(harness.ledger.decisions)
            wait_until(lambda: len(harness.ledger.decisions) >= decided + 4, timeout=60, what="decisions after")
            loader.stop.set()
            wait_until(
                lambda: not Run.objects.exclude(status__in=TERMINAL_RUN_STATUSES).exists(),
                timeout=120,
                interval=0.2,
                what="every run to end after the outage",
            )
            for bot in bots:
                bot.__exit__(None, None, None)
        for process in (server, worker, beat):
            process.check_alive()
        # Sockets open now (some since before the wipe: their channel-layer groups were in Redis)
        # still hear a new checkpoint.
        steady = [client for number, client in enumerate(clients) if not number % 2]
        wait_until(lambda: all(c.open_now for c in steady), timeout=30, what="the steady sockets to be open")
        probe = starter.start_run("gated", gated_input)
        approval = wait_until(
            lambda: ApprovalRequest.objects.filter(run_id=probe, status="pending").values_list("pk", flat=True).first(),
            timeout=30,
            what="the probe's approval",
        )
        deaf = []
        try:
            wait_until(lambda: all(approval in c.received_at for c in steady), timeout=10, what="the push")
        except TimeoutError:
            deaf = [c.name for c in steady if approval not in c.received_at]
        stop_sockets.set()
        harness.check(settle_timeout=30, clients=clients, server=server, loop=loop)
    finally:
        stop_sockets.set()
        for bot in bots:
            bot.stop.set()
        loop.close()
        starter.close()

    assert not deaf, f"open sockets that never heard approval {approval} after the Redis restart: {deaf}"
    # The API answered through the outage: starts 201 and decisions 200 (nothing was waiting on Redis).
    assert during.get("start 201", 0) + during.get("decide 200", 0) > 0, during
    assert not any(key.endswith(("500", "502", "503")) for key in harness.ledger.outcomes), harness.ledger.outcomes
    chaos = Run.objects.filter(agent__slug="chaos")
    assert set(chaos.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    assert set(Run.objects.exclude(pk=probe).values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
