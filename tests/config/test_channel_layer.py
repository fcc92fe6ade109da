"""group_send reaches a websocket client connected to a real ASGI server process (both stacks)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.layers import get_channel_layer
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from config.consumers import PING_GROUP
from tests.conftest import PASSWORD, make_user

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def session_cookie() -> str:
    user = make_user(f"ws-{uuid.uuid4().hex[:6]}")
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return f"sessionid={client.cookies['sessionid'].value}"


async def group_send(payload: dict) -> None:
    await get_channel_layer().group_send(PING_GROUP, {"type": "ping.message", "payload": payload})


async def receive_after(server, cookie: str, *, idle: float) -> dict:
    async with connect(
        f"{server.ws_url}/ws/ping/", origin=server.url, additional_headers={"Cookie": cookie}, open_timeout=10
    ) as websocket:
        await asyncio.sleep(idle)
        marker = uuid.uuid4().hex
        await group_send({"marker": marker})
        message = json.loads(await asyncio.wait_for(websocket.recv(), timeout=5))
        assert message == {"marker": marker}
        return message


def test_group_send_reaches_a_websocket_client(asgi_server):
    asyncio.run(receive_after(asgi_server, session_cookie(), idle=0))


def test_idle_websocket_still_receives_after_10_seconds(asgi_server):
    # redis-py 8's default socket timeout dropped websockets idle for about 5 s.
    asyncio.run(receive_after(asgi_server, session_cookie(), idle=10))


def test_anonymous_and_foreign_origin_are_refused(asgi_server):
    cookie = session_cookie()

    async def handshake(**kwargs) -> None:
        async with connect(f"{asgi_server.ws_url}/ws/ping/", open_timeout=10, **kwargs):
            pass

    with pytest.raises(InvalidStatus):
        asyncio.run(handshake(origin=asgi_server.url))
    with pytest.raises(InvalidStatus):
        asyncio.run(handshake(origin="http://evil.example", additional_headers={"Cookie": cookie}))


def test_server_restart_keeps_the_port(asgi_server):
    url = asgi_server.url
    asgi_server.stop()
    asgi_server.start()
    assert asgi_server.url == url
    asyncio.run(receive_after(asgi_server, session_cookie(), idle=0))
