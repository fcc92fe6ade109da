"""Fifty inbox websockets come and go while approvals are created and decided.

Ten reviewers (five of them may review only one of the two agents), five connections each, spread
over two ASGI servers; each connects, stays a seeded while, leaves, comes back with its last seq.
At the end every client reconnects once more and must hold exactly the database's pending set for
the agents it may review; on no connection may a seq come twice or an event of another agent come.
"""

from __future__ import annotations

import threading
import time

import pytest

from agents.models import Run, RunStatus
from tests.faults.clients import Api, Loader, LoopThread, ReviewerBot, make_clients, sign_in
from tests.faults.world import CUSTOMER, build
from tests.live import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

USERS = [f"r{n:02d}" for n in range(2, 12)]
CONNECTIONS_PER_USER = 5
CHURN_SECONDS = 15


@pytest.mark.timeout(300)
def test_fifty_websockets_come_and_go_while_approvals_are_created(harness, stack):
    world = build(
        {
            "agents": [{"kind": "gated", "slug": "gated"}, {"kind": "gated", "slug": "gated2"}],
            "reviewers": 11,
            "only": {n: ["gated"] for n in range(7, 12)},
        }
    )
    servers = [stack.server("asgi-a"), stack.server("asgi-b")]
    worker = stack.worker()
    for process in (*servers, worker):
        process.start()
    cookies = {name: f"sessionid={sign_in(servers[0].url, name).cookies['sessionid']}" for name in USERS}
    clients = make_clients(
        cookies, world["may_review"], [f"{name}#{n}" for name in USERS for n in range(CONNECTIONS_PER_USER)]
    )
    assert len(clients) == 50
    loop = LoopThread()
    stop = threading.Event()
    starter = Api(harness.ledger, servers[1].url, world["tokens"]["starter"], name="starter")
    gated_input = {"ticket_id": world["ticket"], "customer_email": CUSTOMER, "amount": 15, "currency": "USD"}
    bot = ReviewerBot(Api(harness.ledger, servers[0].url, world["tokens"]["r01"], name="r01"), harness.rng("r01"))
    try:
        for client in clients:
            loop.spawn(client.churn(servers, harness.rng(client.name), stop, mean=0.8))
        with Loader(
            [starter], lambda n: ("gated2" if n % 3 == 2 else "gated", gated_input), limit=30, interval=0.3
        ) as loader:
            with bot:
                # The reviewer decides for the first part only: what is created later stays pending.
                time.sleep(CHURN_SECONDS * 2 / 3)  # the length of the churn, not a synchronization
            time.sleep(CHURN_SECONDS / 3)
            loader.stop.set()
        wait_until(
            lambda: not Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists(),
            timeout=60,
            what="the runs to settle",
        )
        stop.set()
        harness.check(settle_timeout=30, clients=clients, server=servers[0], loop=loop)
    finally:
        stop.set()
        loop.close()
        starter.close()
    connections = sum(c.connections for c in clients)
    print(f"[{harness.name}] {connections} connections by 50 clients, {sum(c.messages for c in clients)} messages")
    assert connections >= 150
    assert any(client.pending() for client in clients), "nothing was left pending to compare"
