"""A diagnostic websocket: proves the channel layer reaches a browser through the ASGI server."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

PING_GROUP = "ping"


class PingConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        # Join before accepting: once the handshake completes, group messages arrive.
        await self.channel_layer.group_add(PING_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(PING_GROUP, self.channel_name)

    async def ping_message(self, event: dict[str, Any]) -> None:
        await self.send_json(event.get("payload", {}))
