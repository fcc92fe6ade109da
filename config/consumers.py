"""A diagnostic websocket: proves the channel layer reaches a browser through the ASGI server."""

from __future__ import annotations

from audit.types import JSONObject
from config.consumer_base import JsonWebsocketConsumer

PING_GROUP = "ping"


class PingConsumer(JsonWebsocketConsumer):
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

    async def ping_message(self, event: JSONObject) -> None:
        await self.send_json(event.get("payload", {}))
