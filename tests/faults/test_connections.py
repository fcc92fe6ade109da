"""A server's PostgreSQL connections stay bounded under concurrent requests (the real stack only).

Twenty reviewers at once (the race scenario) need twenty requests served at once; a server that
kept a connection per request thread it ever ran exhausted PostgreSQL's max_connections (79
connections after five rounds of twenty), and then decisions got 500 and tool calls failed. The
server's pool (config/databases.py, postgres_pooled) bounds them; requests beyond it wait for a
connection. Counted from /proc: the TCP sockets the uvicorn process holds to the database's port.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings

from tests.faults.clients import Api
from tests.faults.world import build

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 5
CONCURRENT = 20
POOL = 8  # the server's DATABASE_POOL_MAX_SIZE: fewer than the requests at once


def connections_to(pid: int, port: int) -> int:
    """TCP sockets of process ``pid`` connected to ``port`` (any address), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                count += 1
    return count


def test_a_server_holds_a_bounded_number_of_database_connections(harness, stack):
    world = build({"agents": [{"kind": "gated", "slug": "gated"}], "reviewers": CONCURRENT})
    server = stack.server(DATABASE_POOL_MAX_SIZE=str(POOL))
    server.start()
    port = int(settings.DATABASES["default"].get("PORT") or 5432)
    apis = [Api(harness.ledger, server.url, world["tokens"][name], name=name) for name in world["reviewers"]]
    held = []
    try:
        for _ in range(ROUNDS):
            with ThreadPoolExecutor(CONCURRENT) as pool:
                assert all(page is not None for page in pool.map(lambda api: api.pending(), apis))
            held.append(connections_to(server.proc.pid, port))
    finally:
        for api in apis:
            api.close()
    print(f"[{harness.name}] connections held by one uvicorn after each round of {CONCURRENT} requests: {held}")
    harness.check(settle_timeout=5)
    # The pool's bound (config/databases.py, postgres_pooled), whatever the number of requests.
    assert 0 < max(held) <= POOL, (
        f"one ASGI server held {held} PostgreSQL connections after rounds of {CONCURRENT} concurrent "
        f"requests; its pool holds at most {POOL}"
    )
