"""Latency measures: checkpoint → browser, one event → 500 browsers, decision → resumed run.

Each has its floor measured in the same run: the bare mechanism the measure rides on (a raw
``group_send`` to the same kind of client; a raw Celery no-op on the same worker).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models.signals import post_save
from redis import Redis

from agents.models import TERMINAL_RUN_STATUSES, Run, RunStatus
from approvals.models import ApprovalRequest, InboxEvent
from audit.models import AuditEvent
from bench.http import Http
from bench.progress import progress
from bench.stats import Goal, Measure
from bench.tasks import FLOOR_KEY, noop
from bench.world import World, checkpoint_reach
from bench.ws import Clients, inbox_key, ping_key
from config.celery import broker_redis
from config.consumers import PING_GROUP
from tests.live import AsgiServer, wait_until

STOPPED = [*TERMINAL_RUN_STATUSES, RunStatus.WAITING]
LATENCY_GOALS = [Goal("p50", 10), Goal("p99", 30)]
WAIT = 30.0


class CommitClock:
    """When each approval's first inbox event committed (perf_counter): a hook registered when
    the event row is saved, so it runs on commit just before the push that notify registers."""

    def __init__(self) -> None:
        self.commits: dict[int, float] = {}

    def _saved(self, sender: Any, instance: InboxEvent, created: bool, **kwargs: Any) -> None:
        if created:
            approval_id = instance.approval_id
            transaction.on_commit(lambda: self.commits.setdefault(approval_id, time.perf_counter()))

    @contextmanager
    def running(self) -> Iterator[CommitClock]:
        post_save.connect(self._saved, sender=InboxEvent, weak=False)
        try:
            yield self
        finally:
            post_save.disconnect(self._saved, sender=InboxEvent)


def _inbox_clients(asgi: AsgiServer, world: World) -> Clients:
    # From the newest stored event on: the handshake replays nothing older.
    last = InboxEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    return Clients(
        url=f"{asgi.ws_url}/ws/inbox/?last_seq={last}", origin=asgi.url, cookie=world.reviewer_cookie, key=inbox_key
    )


def _ping_clients(asgi: AsgiServer, world: World) -> Clients:
    return Clients(url=f"{asgi.ws_url}/ws/ping/", origin=asgi.url, cookie=world.reviewer_cookie, key=ping_key)


def _checkpoint_lags(clients: Clients, world: World, *, events: int, desc: str) -> list[float]:
    lags: list[float] = []
    with CommitClock().running() as clock:
        for _ in progress(range(events), desc=desc):
            approval = checkpoint_reach(world)
            arrived = wait_until(
                partial(clients.arrived, approval.pk),
                timeout=WAIT,
                interval=0.001,
                what="the inbox event",
            )
            lags.extend((at - clock.commits[approval.pk]) * 1000 for at in arrived)
    return lags


def _ping_lags(clients: Clients, *, sends: int, desc: str) -> list[float]:
    """A raw group_send from this thread through async_to_sync, as notify sends (a new loop a call)."""
    layer = get_channel_layer()
    assert layer is not None
    lags: list[float] = []
    for index in progress(range(sends), desc=desc):
        sent = time.perf_counter()
        async_to_sync(layer.group_send)(PING_GROUP, {"type": "ping.message", "payload": {"i": index}})
        arrived = wait_until(partial(clients.arrived, index), timeout=WAIT, interval=0.001, what="the ping")
        lags.extend((at - sent) * 1000 for at in arrived)
    return lags


def _floor(lags: list[float]) -> float:
    return Measure(name="floor", unit="ms", samples=lags).value("p50") or 0.0


def checkpoint_to_browser(asgi: AsgiServer, world: World, *, n: int) -> Measure:
    floor_clients = _ping_clients(asgi, world)
    floor_clients.open(1)
    try:
        floor = _floor(_ping_lags(floor_clients, sends=n, desc="group_send floor"))
    finally:
        floor_clients.close()
    clients = _inbox_clients(asgi, world)
    clients.open(1)
    try:
        lags = _checkpoint_lags(clients, world, events=n, desc="checkpoint → browser")
    finally:
        clients.close()
    return Measure(name="checkpoint_to_browser_ms", unit="ms", samples=lags, floor=floor, goals=LATENCY_GOALS)


def fanout(asgi: AsgiServer, world: World, *, sockets: int, events: int) -> Measure:
    floor_clients = _ping_clients(asgi, world)
    floor_clients.open(sockets)
    try:
        floor = _floor(_ping_lags(floor_clients, sends=events, desc=f"group_send to {sockets}"))
    finally:
        floor_clients.close()
    clients = _inbox_clients(asgi, world)
    clients.open(sockets)
    try:
        lags = _checkpoint_lags(clients, world, events=events, desc=f"event → {sockets} browsers")
    finally:
        clients.close()
    return Measure(
        name=f"fanout_{sockets}_ms",
        unit="ms",
        samples=lags,
        floor=floor,
        goals=[Goal("p99", 250)],
        extra={"sockets": sockets, "events": events},
    )


def _resume_started(run_id: int) -> float | None:
    """When the worker began the resumed run: its "agents.run.resumed" audit event's time."""
    event = AuditEvent.objects.filter(action="agents.run.resumed", target_id=str(run_id)).order_by("pk").first()
    return event.created_at.timestamp() if event else None


def _longer(client: Redis, length: int) -> bool:
    return cast(int, client.llen(FLOOR_KEY)) > length


def _stopped(run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, status__in=STOPPED).exists()


def _noop_floor(*, n: int) -> float:
    client = broker_redis(timeout=2)
    try:
        client.delete(FLOOR_KEY)
        for index in progress(range(n), desc="celery no-op floor"):
            # On the resumes queue, as a resume goes; one at a time, so none waits behind another.
            noop.apply_async(args=[time.time()], queue="resumes")
            wait_until(partial(_longer, client, index), timeout=WAIT, interval=0.001, what="the no-op task")
        lags = [float(value) for value in cast(list[bytes], client.lrange(FLOOR_KEY, 0, -1))]
    finally:
        client.close()
    return _floor(lags)


def decision_to_resume(asgi: AsgiServer, world: World, approvals: list[ApprovalRequest]) -> Measure:
    """The decision POST's response → the worker starting the resumed run. Negative when the
    worker started before the response reached the client (the resume is rung on commit)."""
    floor = _noop_floor(n=len(approvals) * 2)
    api = Http(asgi.url, token=world.reviewer_token)
    lags: list[float] = []
    try:
        for approval in progress(approvals, desc="decision → resume"):
            answer = api.request("POST", f"/api/v1/approvals/{approval.pk}/decision/", {"verdict": "approve"})
            if answer.status != 200:
                raise RuntimeError(f"the decision answered {answer.status}: {answer.body[:300]!r}")
            started = wait_until(partial(_resume_started, approval.run_id), timeout=WAIT, what="the resumed run")
            lags.append((started - answer.received_at) * 1000)
            # The run stops (done, or at its next checkpoint) before the next decision: no sample
            # waits behind another's work.
            wait_until(
                partial(_stopped, approval.run_id),
                timeout=WAIT,
                what="the resumed run to stop",
            )
    finally:
        api.close()
    return Measure(name="decision_to_resume_ms", unit="ms", samples=lags, floor=floor, goals=LATENCY_GOALS)
