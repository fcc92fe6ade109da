"""Limits on failed sign-ins, in the Django cache (Redis), shared by every web process.

Every failed sign-in writes an audit event and takes the audit chain lock; without a limit a
password-guessing script floods the append-only log. Three counters, each over a fixed window
of ``SIGNIN_WINDOW_SECONDS`` that opens at the first failure:

- per client IP: ``SIGNIN_FAILURES_PER_WINDOW`` failures (a guesser trying many names);
- per username and IP: the same number (a guesser on one account from one place);
- per username from anywhere: ten times that (a guesser spread over many addresses). It is
  higher so that somebody typing wrong passwords for another's name cannot easily lock that
  person out: their own address keeps its own, untouched counters.

Past a limit every attempt it covers is refused (right password or not) without checking the
password until the window ends, and one ``auth.login.throttled`` event per window says so.
The client IP is ``config.clients.client_address``: the socket peer, or behind the proxies named
in ``TRUSTED_PROXIES`` the address they forward. A client cannot pick its own key by sending
X-Forwarded-For; behind a proxy that is not listed, every client shares the proxy's counters and
the per-username counter still holds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache

from audit.services import audit_record
from audit.types import AnyRequest
from config.clients import client_address

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigninThrottled:
    scope: str  # "ip" or "username"
    retry_after: int  # seconds

    @property
    def message(self) -> str:
        return f"Too many failed sign-in attempts. Try again in {self.retry_after} seconds."


# How many more failures the per-username counter allows than the per-IP ones.
USERNAME_FACTOR = 10


def _keys(*, request: AnyRequest | None, username: str) -> list[tuple[str, str, int]]:
    """(scope, cache key, limit) of every counter this attempt counts against."""
    limit = settings.SIGNIN_FAILURES_PER_WINDOW
    keys = []
    ip = client_address(request)
    if ip:
        keys.append(("ip", f"signin:failures:ip:{ip}", limit))
    name = username.strip().lower()
    if name:
        # Hashed: no usernames in the cache, and a key of bounded length whatever was typed.
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        if ip:
            keys.append(("username_ip", f"signin:failures:user-ip:{digest}:{ip}", limit))
        keys.append(("username", f"signin:failures:user:{digest}", limit * USERNAME_FACTOR))
    return keys


def signin_throttle_check(*, request: AnyRequest | None, username: str) -> SigninThrottled | None:
    """None when this sign-in attempt may go ahead; otherwise why not (audited once per window)."""
    try:
        for scope, key, limit in _keys(request=request, username=username):
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
                        "ip": client_address(request),
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


def signin_failure_record(*, request: AnyRequest | None, username: str) -> None:
    window = settings.SIGNIN_WINDOW_SECONDS
    try:
        for _scope, key, _limit in _keys(request=request, username=username):
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
