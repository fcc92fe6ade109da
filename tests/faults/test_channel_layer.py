"""The channel layer under socket churn: does a group message reach every steady receiver?

The inbox pushes each event to a group; the websocket scenarios found sockets that stayed open
and still missed one. This isolates the layer the ASGI server uses (channels_redis, configured as
config/settings.py does, on the scenario's private Redis): ten channels receive without pause
while twenty others keep joining the group, starting a receive and having it cancelled (what a
disconnecting websocket's consumer does), and 300 messages are sent to the group.

With the list-based ``channels_redis.core.RedisChannelLayer`` this lost 7 of 300 messages on
every steady channel: it sends a group message once per process, naming all its channels, and the
receive that holds the process's receive lock pops it from Redis; a receive cancelled at that
moment loses the message for every channel of the process. The pub/sub layer the settings name
now queues each channel's messages in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.test import override_settings

pytestmark = [pytest.mark.faults, pytest.mark.live]

MESSAGES = 300
STEADY = 10
CHURNING = 20


def layer_on(redis_url: str):
    """The settings' channel layer, as the ASGI server makes it, on the scenario's Redis."""
    configured = settings.CHANNEL_LAYERS["default"]
    hosts = [{**host, "address": redis_url} for host in configured["CONFIG"]["hosts"]]
    layers = {"default": {**configured, "CONFIG": {**configured["CONFIG"], "hosts": hosts}}}
    with override_settings(CHANNEL_LAYERS=layers):
        return channel_layers.make_backend("default")


async def lost_messages(redis_url: str, seed: str) -> dict[str, list[int]]:
    layer = layer_on(redis_url)
    steady = [await layer.new_channel() for _ in range(STEADY)]
    got: dict[str, list[int]] = {channel: [] for channel in steady}
    for channel in steady:
        await layer.group_add("faults", channel)
    stop = asyncio.Event()

    async def receive(channel: str) -> None:
        while True:  # never cancelled until the end: no message of its own is ever abandoned
            got[channel].append((await layer.receive(channel))["n"])

    async def churn(number: int) -> None:
        rng = random.Random(f"{seed}:{number}")
        while not stop.is_set():
            channel = await layer.new_channel()
            await layer.group_add("faults", channel)
            pending = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(rng.uniform(0, 0.05))  # how long this socket stays
            pending.cancel()  # a disconnect cancels the consumer's receive
            await layer.group_discard("faults", channel)

    tasks = [asyncio.ensure_future(receive(c)) for c in steady]
    churners = [asyncio.ensure_future(churn(n)) for n in range(CHURNING)]
    for number in range(MESSAGES):
        await layer.group_send("faults", {"type": "faults.message", "n": number})
        await asyncio.sleep(0.005)  # the pace of the events
    stop.set()
    await asyncio.gather(*churners, return_exceptions=True)

    async def all_in() -> None:
        while any(len(values) < MESSAGES for values in got.values()):
            await asyncio.sleep(0.05)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in(), timeout=5)  # until every message is in, or it never will be
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await layer.flush()
    return {channel[-8:]: sorted(set(range(MESSAGES)) - set(values)) for channel, values in got.items()}


def test_group_messages_reach_steady_receivers_while_others_disconnect(harness, stack):
    lost = asyncio.run(lost_messages(stack.redis_url, str(harness.rng().random())))
    missing = {channel: numbers for channel, numbers in lost.items() if numbers}
    print(f"[{harness.name}] messages lost per steady channel: { {c: len(n) for c, n in lost.items()} }")
    assert not missing, (
        f"{len(missing)} of {STEADY} steady receivers lost group messages while other channels' receives "
        f"were cancelled: {missing}"
    )
