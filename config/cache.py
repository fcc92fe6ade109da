"""The Django cache on the project's Redis, which it shares with the Celery broker and the channel layer."""

from __future__ import annotations

import re
from typing import Any

from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured

CLEAR_BATCH = 500


class SharedRedisCache(RedisCache):
    """Django's RedisCache whose ``clear()`` deletes only this cache's keys.

    Django's own ``clear()`` runs FLUSHDB, which here would also drop queued Celery tasks,
    kombu's queue bindings (so later tasks are routed nowhere) and channel-layer messages.
    """

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        if not self.key_prefix:
            raise ImproperlyConfigured(
                "CACHES['default']['KEY_PREFIX'] is empty: SharedRedisCache needs a prefix to tell its keys "
                "from the broker's."
            )

    def clear(self) -> None:
        client = self._cache.get_client(None, write=True)
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", self.key_prefix) + ":*"  # the prefix, glob-escaped
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=CLEAR_BATCH):
            batch.append(key)
            if len(batch) >= CLEAR_BATCH:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
