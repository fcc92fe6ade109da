"""Limits on failed sign-ins, per client IP and per username, in the Django cache (Redis).

Every failed sign-in writes an audit event and takes the audit chain lock; without a limit a
password-guessing script floods the append-only log. After ``SIGNIN_FAILURES_PER_WINDOW``
failures within ``SIGNIN_WINDOW_SECONDS`` from one IP or for one username, every sign-in
attempt from there (right password or not) is refused without checking the password until
the window ends, and one ``auth.login.throttled`` event per window says so.

The window is fixed: it opens at the first failure and does not slide. Behind a reverse
proxy every client has the proxy's REMOTE_ADDR; the per-username limit still holds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache

from audit.services import audit_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigninThrottled:
    scope: str  # "ip" or "username"
    retry_after: int  # seconds

    @property
    def message(self) -> str:
        return f"Too many failed sign-in attempts. Try again in {self.retry_after} seconds."


def _client_ip(request: Any) -> str:
    return getattr(request, "META", {}).get("REMOTE_ADDR", "") if request is not None else ""


def _keys(*, request: Any, username: str) -> list[tuple[str, str]]:
    keys = []
    ip = _client_ip(request)
    if ip:
        keys.append(("ip", f"signin:failures:ip:{ip}"))
    name = username.strip().lower()
    if name:
        # Hashed: no usernames in the cache, and a key of bounded length whatever was typed.
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        keys.append(("username", f"signin:failures:user:{digest}"))
    return keys


def signin_throttle_check(*, request: Any, username: str) -> SigninThrottled | None:
    """None when this sign-in attempt may go ahead; otherwise why not (audited once per window)."""
    limit = settings.SIGNIN_FAILURES_PER_WINDOW
    try:
        for scope, key in _keys(request=request, username=username):
            if (cache.get(key) or 0) < limit:
                continue
            opened = cache.get(f"{key}:opened") or time.time()
            retry_after = max(1, round(opened + settings.SIGNIN_WINDOW_SECONDS - time.time()))
            # add() is atomic in Redis: of all the web processes, one writes the event.
            if cache.add(f"{key}:audited", 1, timeout=retry_after):
                audit_record(
                    actor=AnonymousUser(),
                    action="auth.login.throttled",
                    data={
                        "username": username[:150],
                        "ip": _client_ip(request),
                        "scope": scope,
                        "failures": limit,
                        "window_seconds": settings.SIGNIN_WINDOW_SECONDS,
                    },
                )
            return SigninThrottled(scope=scope, retry_after=retry_after)
    except Exception:
        # Fail open: a Redis outage must not lock everyone out (the broker is down then too,
        # and /healthz says so).
        logger.warning("sign-in limit could not be checked; attempt allowed", exc_info=True)
    return None


def signin_failure_record(*, request: Any, username: str) -> None:
    window = settings.SIGNIN_WINDOW_SECONDS
    try:
        for _scope, key in _keys(request=request, username=username):
            if cache.add(key, 0, timeout=window):
                cache.set(f"{key}:opened", time.time(), timeout=window)
            try:
                count = cache.incr(key)
            except ValueError:  # the window ended between add() and incr()
                cache.add(key, 0, timeout=window)
                count = cache.incr(key)
            if count == 1:
                # Redis INCR recreates a key that expired a moment before without a time to
                # live; a counter without one would block this IP or user for good.
                cache.touch(key, timeout=window)
    except Exception:
        logger.warning("sign-in failure could not be counted", exc_info=True)
