"""How many inbox websockets are open, over every server process.

Each process keeps the set of its open sockets and writes their number into one Redis hash, a
field per process whose value also carries the Redis server's time of the write. The scrape
adds up the fields written within ``STALE_AFTER_SECONDS`` and drops older ones, so a process
that died (its sockets with it) stops counting within that time, without anyone cleaning up.
While a process has sockets open it writes again every ``REFRESH_SECONDS``. Both sides run as
Lua scripts: the server's own clock decides what is stale, whatever the hosts' clocks say, and
a field cannot be dropped between being read and being written again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
import weakref
from collections.abc import Awaitable
from typing import Any, cast

import redis
import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

KEY = "countersign:websockets"
REFRESH_SECONDS = 30.0
STALE_AFTER_SECONDS = 90
# This process's field: host and pid name it for a person; the suffix keeps a restarted
# process with a reused pid from taking over the field of its dead predecessor.
PROCESS = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

_WRITE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. redis.call('TIME')[1])
return 1
"""
_SUM = """
local now = tonumber(redis.call('TIME')[1])
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local count, written = string.match(fields[i + 1], '^(%d+):(%d+)$')
  if count and now - tonumber(written) <= tonumber(ARGV[1]) then
    total = total + tonumber(count)
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return total
"""

_open: set[str] = set()
_refresher: asyncio.Task[None] | None = None


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def _client() -> redis.asyncio.Redis:
    """One client, and so one connection pool, per event loop. A client made for each write
    opened a connection each time, and redis-py reads its package metadata for every new
    connection: 500 sockets opening at once kept the server's loop busy for most of a second,
    delaying the events pushed meanwhile."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        _clients[loop] = client
    return client


async def _write() -> None:
    try:
        await cast(Awaitable[Any], _client().eval(_WRITE, 1, KEY, PROCESS, str(len(_open))))
    except (redis.RedisError, OSError):
        # The count is a metric: a socket works without it, and the next write puts it right.
        logger.warning("could not write the websocket count to Redis", exc_info=True)


async def _refresh_while_open() -> None:
    while _open:
        await asyncio.sleep(REFRESH_SECONDS)
        await _write()


async def websocket_opened(channel_name: str) -> None:
    global _refresher
    _open.add(channel_name)
    await _write()
    loop = asyncio.get_running_loop()
    if _refresher is None or _refresher.done() or _refresher.get_loop() is not loop:
        _refresher = loop.create_task(_refresh_while_open())


async def websocket_closed(channel_name: str) -> None:
    if channel_name in _open:  # a socket refused at the handshake was never counted
        _open.discard(channel_name)
        await _write()


def websocket_connections(*, timeout: float = 1.0) -> int:
    """The open sockets of every live process (read at scrape time)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return int(cast(int, client.eval(_SUM, 1, KEY, str(STALE_AFTER_SECONDS))))
    finally:
        client.close()
