"""Registered MCP servers for the tests: real published servers started by the pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.mcp import pool
from agents.mcp.models import McpServer
from agents.mcp.services import mcp_server_upsert, mcp_tools_list
from tests.agents.mcp import servers


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    """Each test starts its servers anew and stops them at the end (as a worker does at shutdown)."""
    yield
    pool.close_all()


@pytest.fixture(scope="session")
def sqlite_command() -> str:
    return servers.sqlite_command()


@pytest.fixture
def time_server(db) -> McpServer:
    server, _ = mcp_server_upsert(
        {"slug": "time", "command": servers.time_command(), "args": ["--local-timezone", "UTC"], "timeout_seconds": 10},
        actor="tests",
    )
    mcp_tools_list(server=server, actor="tests")
    return server


@pytest.fixture
def notes_db(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    servers.notes_table(path)
    return path


@pytest.fixture
def sqlite_server(db, sqlite_command: str, notes_db: Path) -> McpServer:
    server, _ = mcp_server_upsert(
        {"slug": "sqlite", "command": sqlite_command, "args": ["--db-path", str(notes_db)], "timeout_seconds": 5},
        actor="tests",
    )
    mcp_tools_list(server=server, actor="tests")
    return server
