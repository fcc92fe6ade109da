"""Websocket clients of the bench: real ``websockets`` connections to the real ASGI server,
signed in by their session cookie, each noting when every message arrived.

They run on an event loop in a thread of their own, so the measuring code stays synchronous
(Django's ORM) and the commit it times happens in the same process as the clock.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

# What identifies a message: an inbox event's approval id, or a ping's "i".
Key = Callable[[dict[str, Any]], object]


def inbox_key(message: dict[str, Any]) -> object:
    return message.get("approval", {}).get("id")


def ping_key(message: dict[str, Any]) -> object:
    return message.get("i")


class Clients:
    """``count`` sockets on ``url``; ``arrivals[i][key]`` is when socket i got that message
    (time.perf_counter, the clock of this process)."""

    def __init__(self, *, url: str, origin: str, cookie: str, key: Key) -> None:
        self.url = url
        self.origin = origin
        self.cookie = cookie
        self.key = key
        self.arrivals: list[dict[object, float]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="bench-ws")
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []

    def _run[T](self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def open(self, count: int, *, batch: int = 50, timeout: float = 120.0) -> None:
        self.thread.start()
        self._run(self._open(count, batch), timeout)

    async def _open(self, count: int, batch: int) -> None:
        # In batches: a few hundred handshakes at once would each wait on the server's first queries.
        for start in range(0, count, batch):
            made = await asyncio.gather(*(self._connect() for _ in range(start, min(start + batch, count))))
            self.sockets.extend(made)
        for index, socket in enumerate(self.sockets):
            self.arrivals.append({})
            self.readers.append(asyncio.create_task(self._read(socket, self.arrivals[index])))

    async def _connect(self) -> ClientConnection:
        return await connect(
            self.url,
            origin=self.origin,  # type: ignore[arg-type]  # a plain str is what websockets checks
            additional_headers={"Cookie": f"sessionid={self.cookie}"},
            open_timeout=60,
            max_queue=None,
        )

    async def _read(self, socket: ClientConnection, arrivals: dict[object, float]) -> None:
        async for frame in socket:
            now = time.perf_counter()
            arrivals.setdefault(self.key(json.loads(frame)), now)  # the first message of a key counts

    def arrived(self, key: object) -> list[float] | None:
        """Every socket's arrival time of ``key``, or None while one is still missing."""
        times = [arrivals.get(key) for arrivals in self.arrivals]
        return None if any(t is None for t in times) else [t for t in times if t is not None]

    def close(self) -> None:
        if not self.thread.is_alive():
            return
        self._run(self._close(), 60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*(socket.close() for socket in self.sockets), return_exceptions=True)
