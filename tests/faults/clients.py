"""The outside world of a fault scenario: API clients that record what was acknowledged, reviewer
bots, and inbox websocket clients that reconnect with their last seq.

The ``Ledger`` is the harness's memory: every run the API answered 201 and every decision it
answered 200, for ``tests.faults.invariants.check`` to find in the database afterwards; and every
other outcome (409, 5xx, a refused connection), counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.faults.world import PASSWORD


class Ledger:
    """What the system acknowledged, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[int, str] = {}
        self.decisions: list[dict[str, Any]] = []
        self.outcomes: Counter[str] = Counter()
        self.marks: list[tuple[float, str]] = []

    def outcome(self, what: str, result: str) -> None:
        with self.lock:
            self.outcomes[f"{what} {result}"] += 1

    def ack_run(self, run_id: int, slug: str) -> None:
        with self.lock:
            self.runs[run_id] = slug

    def ack_decision(self, **decision: Any) -> None:
        with self.lock:
            self.decisions.append(decision)

    def mark(self, text: str) -> None:
        with self.lock:
            self.marks.append((time.monotonic(), text))

    def acks(self) -> dict[str, Any]:
        with self.lock:
            return {"runs": {str(k): v for k, v in self.runs.items()}, "decisions": list(self.decisions)}


def result_of(exc_or_code: Any) -> str:
    if isinstance(exc_or_code, int):
        return str(exc_or_code)
    return type(exc_or_code).__name__


class Api:
    """One API client (token auth) of one server, recording into the ledger."""

    def __init__(self, ledger: Ledger, base_url: str, token: str, *, name: str, timeout: float = 20.0) -> None:
        self.ledger = ledger
        self.name = name
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def start_run(self, slug: str, payload: dict[str, Any]) -> int | None:
        try:
            response = self.http.post(f"/api/v1/agents/{slug}/runs/", json={"input": payload})
        except httpx.HTTPError as exc:
            self.ledger.outcome("start", result_of(exc))
            return None
        self.ledger.outcome("start", result_of(response.status_code))
        if response.status_code != 201:
            return None
        run_id = int(response.json()["id"])
        self.ledger.ack_run(run_id, slug)
        return run_id

    def decide(self, approval: dict[str, Any], verdict: str, **body: Any) -> tuple[int | str, dict[str, Any]]:
        """POST a decision; a 200 is recorded as acknowledged. Returns (status or error name, body)."""
        try:
            response = self.http.post(
                f"/api/v1/approvals/{approval['id']}/decision/", json={"verdict": verdict, **body}
            )
        except httpx.HTTPError as exc:
            self.ledger.outcome("decide", result_of(exc))
            self.ledger.outcome(f"verdict {verdict}", result_of(exc))
            return result_of(exc), {}
        self.ledger.outcome("decide", result_of(response.status_code))
        self.ledger.outcome(f"verdict {verdict}", result_of(response.status_code))
        try:
            data = response.json()
        except ValueError:
            data = {"raw": response.text[:200]}
        if response.status_code == 200:
            self.ledger.ack_decision(
                approval=approval["id"],
                reviewer=self.name,
                verdict=verdict,
                status=data.get("status"),
                run=approval.get("run"),
            )
        return response.status_code, data

    def pending(self) -> list[dict[str, Any]] | None:
        try:
            response = self.http.get("/api/v1/approvals/", params={"status": "pending"})
        except httpx.HTTPError as exc:
            self.ledger.outcome("list", result_of(exc))
            return None
        if response.status_code != 200:
            self.ledger.outcome("list", result_of(response.status_code))
            return None
        return list(response.json()["results"])


def verdict_for(approval: dict[str, Any], rng: random.Random, *, reject: float, edit: float) -> tuple[str, dict]:
    """A reviewer's answer, seeded: approve, or now and then reject (with a reason) or edit a refund."""
    kind = approval.get("kind")
    if kind == "review":
        return "ok", {}
    if kind == "question":
        return "respond", {"comment": "yes"}
    if kind == "suggestion":
        return "done", {}
    roll = rng.random()
    if roll < reject:
        return "reject", {"comment": "not this one"}
    if roll < reject + edit and approval["tool"] == "issue_refund":
        arguments = dict(approval.get("decided_arguments") or approval["arguments"])
        arguments["amount"] = max(0.5, round(float(arguments["amount"]) / 2, 2))
        return "edit", {"arguments": arguments}
    return "approve", {"arguments_hash": approval["arguments_hash"]}


class Background:
    """A daemon thread running ``_loop`` from ``with`` until the block ends (``stop`` is set)."""

    def __init__(self, name: str) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def _loop(self) -> None:
        raise NotImplementedError


class ReviewerBot(Background):
    """A reviewer who keeps the inbox empty: polls the pending approvals over the API and decides
    each (seeded verdicts). A request that failed (5xx, refused) is tried again on the next poll."""

    def __init__(
        self, api: Api, rng: random.Random, *, reject: float = 0.1, edit: float = 0.1, interval: float = 0.05
    ) -> None:
        self.api = api
        self.rng = rng
        self.reject = reject
        self.edit = edit
        self.interval = interval
        self.done: set[int] = set()
        super().__init__(f"reviewer-{api.name}")

    def _loop(self) -> None:
        while not self.stop.is_set():
            for approval in self.api.pending() or []:
                if self.stop.is_set():
                    return
                if approval["id"] in self.done:
                    continue
                verdict, body = verdict_for(approval, self.rng, reject=self.reject, edit=self.edit)
                code, _ = self.api.decide(approval, verdict, **body)
                if code in (200, 403, 404, 409):  # decided, by this reviewer or another
                    self.done.add(approval["id"])
            self.stop.wait(self.interval)


class Loader(Background):
    """Starts runs at a steady pace through one or more API clients, until stopped or ``limit``;
    while ``gate()`` is false (enough runs in flight) it waits instead."""

    def __init__(
        self,
        apis: list[Api],
        make: Callable[[int], tuple[str, dict[str, Any]]],
        *,
        limit: int,
        interval: float,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self.apis = apis
        self.make = make
        self.limit = limit
        self.interval = interval
        self.gate = gate
        self.started: list[int] = []
        super().__init__("loader")

    def _loop(self) -> None:
        from django.db import connection

        try:
            self._start_runs()
        finally:
            connection.close()  # this thread's own (the gate may read the database)

    def _start_runs(self) -> None:
        number = 0
        while not self.stop.is_set() and number < self.limit:
            if self.gate is not None and not self.gate():
                self.stop.wait(self.interval)
                continue
            slug, payload = self.make(number)
            run_id = self.apis[number % len(self.apis)].start_run(slug, payload)
            if run_id is not None:
                self.started.append(run_id)
            number += 1
            self.stop.wait(self.interval)


# --- Signed-in browsers (session cookie and CSRF), for the websocket and the pages' POSTs -----------


def sign_in(base_url: str, username: str) -> httpx.Client:
    """Sign in through the login page as a browser does; the client then holds the session and
    CSRF cookies (cookies ignore the port: the same session works on every server of the stack)."""
    http = httpx.Client(base_url=base_url, timeout=20.0, follow_redirects=False)
    http.get("/accounts/login/")
    token = http.cookies["csrftoken"]
    response = http.post(
        "/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Origin": base_url, "Referer": f"{base_url}/accounts/login/"},
    )
    if response.status_code != 302 or "sessionid" not in http.cookies:
        raise RuntimeError(f"sign-in of {username} failed: {response.status_code} {response.text[:300]}")
    return http


def csrf_post(http: httpx.Client, base_url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(
        base_url + path,
        json=body,
        headers={"X-CSRFToken": http.cookies["csrftoken"], "Origin": base_url, "Referer": base_url + "/inbox/"},
    )


# --- Inbox websocket clients --------------------------------------------------------------------


class LoopThread:
    """An asyncio event loop in a thread of its own, hosting every websocket client of a test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="websockets", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class InboxClient:
    """A reviewer's inbox over ``/ws/inbox/?last_seq=N``, as static/js/live.js does it: it remembers
    the highest seq it saw and asks for what it missed when it connects again.

    It keeps, per approval, the payload of the highest seq (a status moves once, and a later
    event is read after the earlier one committed), so ``pending()`` is its view of the inbox.
    ``problems`` collects what the websocket contract forbids: the same seq twice on one
    connection, or an event of an agent the user may not review.
    """

    name: str
    cookie: str
    may_review: frozenset[str]
    last_seq: int = 0
    latest: dict[int, tuple[int, str, str]] = field(default_factory=dict)
    connections: int = 0
    messages: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    received_at: dict[int, float] = field(default_factory=dict)
    payloads: dict[int, dict[str, Any]] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)  # every seq ever received
    out_of_order: int = 0  # live events that came after a higher seq on the same connection
    history: list[tuple[int, list[int]]] = field(default_factory=list)  # (last_seq sent, seqs received)
    open_now: bool = False

    def take(self, message: dict[str, Any], seen: set[int]) -> None:
        seq = int(message["seq"])
        approval = message["approval"]
        self.messages += 1
        if seq in seen:
            self.problems.append(f"{self.name}: seq {seq} twice on one connection")
        if seen and seq < max(seen):
            self.out_of_order += 1
        if self.history:
            self.history[-1][1].append(seq)
        seen.add(seq)
        self.seen.add(seq)
        slug = approval["agent"]["slug"]
        if slug not in self.may_review:
            self.problems.append(f"{self.name}: got seq {seq} of agent {slug}, which it may not review")
        known = self.latest.get(approval["id"])
        if known is None or seq > known[0]:
            self.latest[approval["id"]] = (seq, approval["status"], slug)
            self.payloads[approval["id"]] = approval
        if approval["status"] == "pending" and approval["id"] not in self.received_at:
            self.received_at[approval["id"]] = time.monotonic()
        self.last_seq = max(self.last_seq, seq)

    def pending(self) -> set[int]:
        return {approval_id for approval_id, (_, status, _) in self.latest.items() if status == "pending"}

    async def session(
        self,
        server: Any,
        *,
        duration: float | None = None,
        until: Callable[[InboxClient], bool] | None = None,
        stop: threading.Event | None = None,
    ) -> bool:
        """One connection: receive until ``duration`` passes, ``until(self)`` holds, ``stop`` is set or
        the server closes. Returns whether it connected."""
        url = f"{server.ws_url}/ws/inbox/?last_seq={self.last_seq}"
        loop = asyncio.get_running_loop()
        deadline = None if duration is None else loop.time() + duration
        try:
            async with connect(
                url, origin=server.url, additional_headers={"Cookie": self.cookie}, open_timeout=15, close_timeout=2
            ) as websocket:
                self.connections += 1
                self.open_now = True
                seen: set[int] = set()
                received: list[int] = []
                self.history.append((self.last_seq, received))
                # One pending recv() at a time, never cancelled while a message may be in it:
                # asyncio.wait_for() around recv() can drop a message that arrives just as its
                # timeout fires, which would look like a seq the server never sent.
                reader: asyncio.Task[Any] | None = None
                try:
                    while not (until is not None and until(self)) and not (stop is not None and stop.is_set()):
                        wait = 0.25 if deadline is None else min(0.25, deadline - loop.time())
                        if wait <= 0:
                            break
                        if reader is None:
                            reader = asyncio.ensure_future(websocket.recv())
                        done, _ = await asyncio.wait({reader}, timeout=wait)
                        if done:
                            raw, reader = reader.result(), None
                            self.take(json.loads(raw), seen)
                finally:
                    self.open_now = False
                    if reader is not None:
                        if reader.done() and not reader.cancelled() and reader.exception() is None:
                            self.take(json.loads(reader.result()), seen)
                        else:
                            reader.cancel()
            return True
        except ConnectionClosed as exc:
            self.drops[f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}"] += 1
            return True
        except (OSError, InvalidStatus, TimeoutError) as exc:
            self.drops[type(exc).__name__] += 1
            return False

    async def churn(self, servers: list[Any], rng: random.Random, stop: threading.Event, *, mean: float) -> None:
        """Connect, stay a while, leave, come back (seeded durations), until stopped."""
        while not stop.is_set():
            server = servers[rng.randrange(len(servers))]
            await self.session(server, duration=rng.expovariate(1 / mean), stop=stop)
            await asyncio.sleep(rng.uniform(0.0, mean / 3))

    async def steady(self, server: Any, stop: threading.Event) -> None:
        """Stay connected; when the server drops the socket, come back with backoff (live.js)."""
        attempt = 0
        while not stop.is_set():
            connected = await self.session(server, stop=stop)
            attempt = 0 if connected else attempt + 1
            if not stop.is_set():
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))

    async def resync(self, server: Any, target_seq: int, timeout: float = 30.0) -> bool:
        """Reconnect with last_seq and read until the highest seq visible to this user is in."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.session(
                server, until=lambda c: c.last_seq >= target_seq, duration=max(0.1, deadline - time.monotonic())
            )
            if self.last_seq >= target_seq:
                return True
        return False


def make_clients(cookies: dict[str, str], may_review: dict[str, list[str]], names: Iterable[str]) -> list[InboxClient]:
    return [
        InboxClient(name=name, cookie=cookies[name.split("#")[0]], may_review=frozenset(may_review[name.split("#")[0]]))
        for name in names
    ]
