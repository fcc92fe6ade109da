"""Restart PostgreSQL while reviewers decide: a 200 is never lost.

A private PostgreSQL cluster (initdb in a temporary directory, a free port; never the machine's
server) holds this scenario's database; the ASGI server, the worker and beat run on it. While runs
start and three reviewer bots decide over the API, the cluster is restarted twice, once with
``pg_ctl restart -m fast`` (connections cut) and once with ``-m immediate`` (the server killed; it
recovers from its WAL). Requests in flight fail (5xx, or the connection drops): the bots try again.
Every decision answered 200 must be in the database afterwards, with its one audit row.

The test process is not connected to that database: the world is built and the invariants are
checked by the same code run as child processes (``python -m tests.faults.world``, ``...invariants``).
"""

from __future__ import annotations

import json

import pytest

from tests.faults.clients import Api, Loader, ReviewerBot
from tests.faults.stack import PrivatePostgres, Stack, manage, python_module
from tests.faults.world import CUSTOMER
from tests.live import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

TERMINAL = {"succeeded", "failed", "rejected", "cancelled"}


@pytest.mark.timeout(360)
def test_postgres_restarted_during_decisions(harness, stack):
    cluster = PrivatePostgres()
    pg_stack = None
    try:
        cluster.init()
        cluster.start()
        pg_stack = Stack(stack.name, redis_url=stack.redis_url, database_url=cluster.create_database("countersign"))
        manage(pg_stack, "migrate", "--no-input", "-v", "0")
        spec = {"agents": [{"kind": "chaos", "slug": "chaos", "refunds": 3}, {"kind": "gated", "slug": "gated"}]}
        world = json.loads(python_module(pg_stack, "tests.faults.world", stdin=json.dumps({**spec, "reviewers": 3})))
        server, worker, beat = pg_stack.server(), pg_stack.worker(), pg_stack.beat()
        for process in (server, worker, beat):
            process.start()

        starter = Api(harness.ledger, server.url, world["tokens"]["starter"], name="starter")
        gated_input = {"ticket_id": world["ticket"], "customer_email": CUSTOMER, "amount": 20, "currency": "USD"}
        bots = [
            ReviewerBot(Api(harness.ledger, server.url, world["tokens"][n], name=n), harness.rng(n), interval=0.02)
            for n in ("r01", "r02", "r03")
        ]
        downtime = []
        with Loader(
            [starter], lambda n: ("chaos", {}) if n % 3 == 0 else ("gated", gated_input), limit=24, interval=0.25
        ) as loader:
            for bot in bots:
                bot.__enter__()
            try:
                for mode in ("fast", "immediate"):
                    decided = len(harness.ledger.decisions)
                    wait_until(
                        lambda d=decided: len(harness.ledger.decisions) >= d + 6,
                        timeout=90,
                        interval=0.05,
                        what=f"decisions before the {mode} restart",
                    )
                    downtime.append((mode, round(cluster.restart(mode), 2)))
                    harness.restart("postgres")
                wait_until(lambda: not loader.thread.is_alive(), timeout=120, what="the loader to start its runs")

                def ended() -> bool:
                    statuses = []
                    for run_id in list(harness.ledger.runs):
                        response = starter.http.get(f"/api/v1/runs/{run_id}/")
                        statuses.append(response.json().get("status") if response.status_code == 200 else None)
                    return all(status in TERMINAL for status in statuses)

                wait_until(ended, timeout=120, interval=0.5, what="every run to end after the restarts")
            finally:
                for bot in bots:
                    bot.__exit__(None, None, None)
                starter.close()
        for process in (server, worker, beat):
            process.check_alive()
        print(f"[{harness.name}] PostgreSQL restarts and their downtime (s): {downtime}")
        report = harness.check(settle_timeout=30, stack=pg_stack)
    finally:
        if pg_stack is not None:
            pg_stack.stop_all()
        cluster.cleanup()

    failures = {k: v for k, v in harness.ledger.outcomes.items() if not k.endswith((" 200", " 201", " 409"))}
    print(f"[{harness.name}] requests that failed during the restarts (tried again): {failures}")
    assert len(harness.ledger.decisions) >= 12
    # A decision the reviewer saw acknowledged is applied: its run went on to the end.
    assert report["stats"]["runs"].get("succeeded", 0) == len(harness.ledger.runs), report["stats"]["runs"]
