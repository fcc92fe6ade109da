"""A streamable-HTTP MCP server for the tests (the SDK's MCPServer under uvicorn), behind a bearer token.

Run as ``python http_server.py PORT CALLS_FILE``; the token comes from MCP_TEST_SERVER_TOKEN. Each
call of ``add_note`` appends a line to CALLS_FILE, so a test counts what the server executed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

PORT, CALLS = int(sys.argv[1]), Path(sys.argv[2])
TOKEN = os.environ["MCP_TEST_SERVER_TOKEN"]

server = MCPServer("notes")


@server.tool()
def add_note(text: str) -> dict[str, Any]:
    """Append a note; returns how many notes there are."""
    with CALLS.open("a") as calls:
        calls.write(text.replace("\n", " ") + "\n")
    return {"count": len(CALLS.read_text().splitlines())}


class BearerOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization", b"").decode() != f"Bearer {TOKEN}":
                await JSONResponse({"detail": "bad token"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(BearerOnly(server.streamable_http_app()), host="127.0.0.1", port=PORT, log_level="warning")
