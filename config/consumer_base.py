"""What every websocket consumer of the project shares: dispatch without a thread hop.

channels' ``AsyncConsumer.dispatch`` runs ``close_old_connections`` through ``sync_to_async``
before every handler: a hop to the one sync thread and back for each message of each socket.
An event fanned out to 500 inbox sockets paid 500 hops, queued one after another on that
thread: most of the fan-out's time. The consumers here read the database only through
``database_sync_to_async``, which closes old connections around each call itself, so the hop
protects nothing that is not already protected.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer


class JsonWebsocketConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]  # channels ships no types: its classes are Any
    """``AsyncJsonWebsocketConsumer`` whose handlers run straight from ``dispatch``. A subclass
    reads the database only through ``database_sync_to_async``."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
