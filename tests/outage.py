"""A broker that is really down, for the tests of what a failed doorbell leaves behind.

No mock of the broker: the Celery app of this process is pointed at an address where nothing
listens (refused at once), at a socket that takes connections and never answers (a hung or
unreachable Redis), or at a private redis-server the test stops and starts again. Only this
process's publishing changes: the suite's shared Redis and any live worker stay as they are.
Loaded by ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from config.embedded import EmbeddedRedis


def _pools_reset(app: Any) -> None:
    # Connections pooled for one broker address must not serve the next (kombu keeps its pools
    # in module-level groups, keyed by address, besides the app's own references).
    from kombu import pools

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """This process publishes to ``url`` inside the block, to the configured broker after it."""
    from config.celery import app

    previous = app.conf.broker_url
    _pools_reset(app)
    app.conf.broker_url = url
    try:
        yield
    finally:
        _pools_reset(app)
        app.conf.broker_url = previous


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def broker_refusing() -> Iterator[None]:
    """Nobody listens at the broker's address: every publish is refused."""
    with celery_broker(f"redis://127.0.0.1:{closed_port()}/0"):
        yield


@contextmanager
def broker_hanging(*, channel_layer_too: bool = False) -> Iterator[None]:
    """The broker takes connections (the kernel's backlog) and never answers a command. With
    ``channel_layer_too``, the channel layer as well: in production both live on one Redis."""
    from django.test import override_settings

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        layers = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [url]}}}
        with celery_broker(url), override_settings(**({"CHANNEL_LAYERS": layers} if channel_layer_too else {})):
            yield


class PrivateBroker:
    """A redis-server of the test's own as the broker; ``stop()`` and ``start()`` it at will."""

    def __init__(self) -> None:
        # A short path: a unix socket's name is limited to about 100 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="csb-", dir="/tmp"))
        self.server = EmbeddedRedis(self.directory / "redis.sock")

    @property
    def url(self) -> str:
        return f"redis+socket://{self.server.socket_path}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def client(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=str(self.server.socket_path), socket_timeout=2)

    def queued(self, queue: str) -> list[tuple[str, list[int]]]:
        """(task name, args) of the messages waiting in ``queue`` (every priority step of it)."""
        import base64
        import json

        client = self.client()
        try:
            messages = []
            for key in sorted(client.scan_iter(match=f"{queue}*")):
                for raw in client.lrange(key, 0, -1):
                    message = json.loads(raw)
                    args = json.loads(base64.b64decode(message["body"]))[0]
                    messages.append((message["headers"]["task"], args))
            return messages
        finally:
            client.close()


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    """This process publishes to a private redis-server for the test (see PrivateBroker)."""
    broker = PrivateBroker()
    broker.start()
    try:
        with celery_broker(broker.url):
            yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.directory, ignore_errors=True)
