"""A plain HTTP client for the bench (http.client, one connection per caller) that reads the
server's own time and query count from ``Server-Timing`` (config/server_timing.py)."""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SERVER_TIMING = re.compile(r'app;dur=([\d.]+).*?desc="(\d+) queries"')


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    server_ms: float | None
    queries: int | None
    received_at: float  # time.time() when the body had arrived


class Http:
    def __init__(self, base_url: str, *, token: str = "", cookie: str = "") -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self.headers = {"Host": f"{parts.hostname}:{parts.port}"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        if cookie:
            self.headers["Cookie"] = f"sessionid={cookie}"

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        content = response.read()
        received = time.time()
        timing = SERVER_TIMING.search(response.getheader("Server-Timing") or "")
        return Answer(
            status=response.status,
            body=content,
            server_ms=float(timing.group(1)) if timing else None,
            queries=int(timing.group(2)) if timing else None,
            received_at=received,
        )

    def close(self) -> None:
        self.connection.close()
