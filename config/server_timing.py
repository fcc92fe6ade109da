"""``Server-Timing`` on every response, for the benchmark suite (``COUNTERSIGN_BENCH=1`` only).

The bench reads the server's own time and query count from the header instead of subtracting
a guessed network and client cost: ``Server-Timing: app;dur=12.3, db;dur=4.1;desc="7 queries"``.
Off by default: it would tell any client how long the database took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponseBase

Handler = Callable[[HttpRequest], HttpResponseBase]


class _QueryClock:
    """Counts the queries of this thread's connection and the time spent in them."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.count += 1
            self.seconds += time.perf_counter() - started


class ServerTimingMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        clock = _QueryClock()
        started = time.perf_counter()
        # The view runs in this thread (sync middleware and views share it under ASGI too), so
        # the wrapper sees every query the request makes.
        with connection.execute_wrapper(clock):
            response = self.get_response(request)
        app_ms = (time.perf_counter() - started) * 1000
        response["Server-Timing"] = (
            f'app;dur={app_ms:.2f}, db;dur={clock.seconds * 1000:.2f};desc="{clock.count} queries"'
        )
        return response
