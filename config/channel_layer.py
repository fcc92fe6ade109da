"""The channel layer: channels_redis's Redis pub/sub layer, with its group subscriptions made safe
against a socket joining while another leaves.

In ``RedisPubSubLoopLayer`` the last channel leaving a group unsubscribes the process from the
group's Redis channel, and a channel joining subscribes it, each under the shard's lock. When a
join came in while the leave waited for that lock, the join found the group still subscribed and
did nothing, then the leave unsubscribed: the new socket stayed in the group but received nothing
until another socket joined (tests/faults/test_websockets.py). Here the unsubscribe, once it holds
the lock, first looks whether a channel has joined the group meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close


class _Shard(RedisSingleShardConnection):  # type: ignore[misc]  # channels_redis ships no types
    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self.channel_layer.groups or channel in self.channel_layer.channels:
                return  # joined again while this waited: the subscription is still wanted
            if channel in self._subscribed_to:
                self._ensure_redis()
                self._ensure_receiver()
                await self._pubsub.unsubscribe(channel)
                self._subscribed_to.remove(channel)


class _LoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]  # channels_redis ships no types
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards: list[_Shard] = [_Shard(shard.host, self) for shard in self._shards]


class PubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]  # channels_redis ships no types
    """``RedisPubSubChannelLayer`` whose per-loop layers are ``_LoopLayer``."""

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        try:
            layer: _LoopLayer = self._layers[loop]
        except KeyError:
            layer = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer
