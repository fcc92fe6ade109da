"""Client sessions to MCP servers, one per server per process, on one event loop in a thread.

The SDK is async and the run runtime is sync: each process keeps an event loop in a daemon
thread and hands it coroutines (``asyncio.run_coroutine_threadsafe``). A session is opened on
the first call to its server, checked with a ping before each later call (a dead server
process is started again), dropped after a timeout (a hung server is not asked again), and
closed when the worker process shuts down.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

logger = logging.getLogger(__name__)

PING_SECONDS = 5.0
# Starting a server process (an interpreter and its imports) is not a tool call: it has its own limit.
START_SECONDS = 30.0
# Beyond the server's own timeout, for closing a hung one.
MARGIN_SECONDS = 10.0


class McpUnavailable(Exception):
    """The server could not be reached or started: nothing was sent to it."""


class McpAnswered(Exception):
    """The server answered the call with an error, or with a result outside its schema."""


@dataclass(frozen=True)
class ServerSpec:
    """What it takes to open a session; a changed spec opens a new one. Values are resolved,
    so env and headers may hold secrets: they are kept out of the repr (and so out of logs)."""

    slug: str
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    url: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout_seconds: float = 30.0


def call_limit(spec: ServerSpec) -> float:
    """The longest one call may take in all: starting the server, the call, closing a hung one."""
    return START_SECONDS + spec.timeout_seconds + MARGIN_SECONDS


class Connection:
    """One open session, owned by one task from entering its transport to closing it."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> ClientSession:
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._own(ready), name=f"mcp-{self.spec.slug}")
        try:
            async with asyncio.timeout(max(START_SECONDS, self.spec.timeout_seconds)):
                self.session = await asyncio.shield(ready)
        except BaseException:
            await self.close()
            raise
        return self.session

    async def _own(self, ready: asyncio.Future[ClientSession]) -> None:
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                ready.set_result(session)
                await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller that waits to open
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else McpUnavailable(repr(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                logger.warning("MCP server %s: session ended: %s", self.spec.slug, type(exc).__name__)

    def _transport(self, stack: AsyncExitStack) -> Any:
        spec = self.spec
        if spec.transport == "http":
            client = httpx2.AsyncClient(headers=dict(spec.headers), timeout=httpx2.Timeout(spec.timeout_seconds))
            stack.push_async_callback(client.aclose)
            return streamable_http_client(spec.url, http_client=client)
        params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env) or None)
        return stdio_client(params, errlog=sys.__stderr__ or sys.stderr)

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            if self.session is None:
                task.cancel()  # still starting: nothing to close politely
            try:
                async with asyncio.timeout(MARGIN_SECONDS):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        self.session = None


class Pool:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._connections: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.starts: dict[str, int] = {}  # sessions opened per server, for the operator and the tests
        threading.Thread(target=self.loop.run_forever, name="mcp-pool", daemon=True).start()

    def run[T](self, make: Callable[[], Awaitable[T]], *, seconds: float) -> T:
        future = asyncio.run_coroutine_threadsafe(_awaited(make), self.loop)
        try:
            return future.result(timeout=seconds)
        except FutureTimeout:
            if future.done():
                raise  # the coroutine's own timeout (the same class since Python 3.11)
            future.cancel()
            raise TimeoutError(f"no answer within {seconds:.1f} s") from None

    async def session(self, spec: ServerSpec) -> ClientSession:
        """The open session of this server: started if there is none, or if it died or changed."""
        async with self._locks.setdefault(spec.slug, asyncio.Lock()):
            connection = self._connections.get(spec.slug)
            if connection is not None and connection.spec == spec and connection.session is not None:
                try:
                    with anyio.fail_after(min(PING_SECONDS, spec.timeout_seconds)):
                        await connection.session.send_ping()
                    return connection.session
                except Exception:  # noqa: BLE001 - a dead or hung server is started again
                    logger.warning("MCP server %s did not answer a ping: starting it again", spec.slug)
            if connection is not None:
                await self.discard(spec.slug)
            connection = Connection(spec)
            try:
                session = await connection.open()
            except Exception as exc:
                raise McpUnavailable(f"{spec.slug}: could not start a session: {type(exc).__name__}: {exc}") from exc
            self._connections[spec.slug] = connection
            self.starts[spec.slug] = self.starts.get(spec.slug, 0) + 1
            return session

    async def discard(self, slug: str) -> None:
        connection = self._connections.pop(slug, None)
        if connection is not None:
            await connection.close()

    async def close_all(self) -> None:
        for slug in list(self._connections):
            await self.discard(slug)


async def _awaited[T](make: Callable[[], Awaitable[T]]) -> T:
    return await make()


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """This process's pool; a forked child (a Celery prefork worker) makes its own."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = Pool()
        return _pool


def list_tools(spec: ServerSpec) -> list[types.Tool]:
    """Every tool the server lists, page by page. The session is closed afterwards: listing is an
    operator's action (in the web process or a command), calls are the workers'."""
    current = pool()

    async def listing() -> list[types.Tool]:
        session = await current.session(spec)
        tools: list[types.Tool] = []
        cursor: str | None = None
        try:
            with anyio.fail_after(spec.timeout_seconds):
                while True:
                    params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    result = await session.list_tools(params=params)
                    tools.extend(result.tools)
                    cursor = result.next_cursor
                    if not cursor:
                        return tools
        finally:
            await current.discard(spec.slug)

    return current.run(listing, seconds=call_limit(spec))


def call_tool(spec: ServerSpec, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """One call. Raises McpUnavailable when nothing was sent, McpAnswered when the server said
    no; TimeoutError or MCPError when the request went out and no answer came (its effect may
    have happened)."""
    current = pool()

    async def calling() -> types.CallToolResult:
        session = await current.session(spec)
        try:
            with anyio.fail_after(spec.timeout_seconds):
                return await session.call_tool(name, arguments)
        except TimeoutError:
            await current.discard(spec.slug)  # a hung server is not asked again: a new one starts
            raise TimeoutError(f"{spec.slug}.{name} did not answer within {spec.timeout_seconds} s") from None
        except MCPError as exc:
            if exc.code not in (types.CONNECTION_CLOSED, types.REQUEST_TIMEOUT):
                raise McpAnswered(f"{spec.slug}.{name} answered with error {exc.code}: {exc.message}") from exc
            await current.discard(spec.slug)  # the request went out and the answer is lost
            raise
        except RuntimeError as exc:  # the SDK's own check of the result against the listed schema
            raise McpAnswered(f"{spec.slug}.{name}: {exc}") from exc

    return current.run(calling, seconds=call_limit(spec))


def close_all(**_: object) -> None:
    """Close every session of this process (worker process shutdown, interpreter exit)."""
    current = _pool
    if current is None or current.pid != os.getpid() or not current.loop.is_running():
        return
    try:
        current.run(current.close_all, seconds=MARGIN_SECONDS * 2)
    except Exception:  # noqa: BLE001 - shutting down: the processes end with their pipes
        logger.warning("MCP sessions did not close cleanly", exc_info=True)


atexit.register(close_all)
