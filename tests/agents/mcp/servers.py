"""The real MCP servers the tests talk to: mcp-server-time, mcp-server-sqlite and a local HTTP one."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from tests.live import free_port, wait_until

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[3]
SQLITE_REQUIREMENTS = ROOT / "requirements-mcp-sqlite.txt"


def time_command() -> str:
    return str(BIN / "mcp-server-time")


def sqlite_command() -> str:
    """mcp-server-sqlite in a virtualenv of its own (it needs the 1.x SDK), built once per var dir
    from requirements-mcp-sqlite.txt and built again when that file changes."""
    venv = Path(settings.VAR_DIR) / "mcp-sqlite"
    stamp = venv / "requirements.sha256"
    wanted = hashlib.sha256(SQLITE_REQUIREMENTS.read_bytes()).hexdigest()
    command = venv / "bin" / "mcp-server-sqlite"
    if not (command.exists() and stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-r", str(SQLITE_REQUIREMENTS)], check=True, timeout=600
        )
        stamp.write_text(wanted)
    return str(command)


def notes_table(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")


def notes(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT body FROM notes ORDER BY id")]


class HttpServer:
    """tests/agents/mcp/http_server.py under uvicorn in a subprocess, on a free port."""

    def __init__(self, tmp: Path, token: str) -> None:
        self.port = free_port()
        self.calls = tmp / "calls.txt"
        self.calls.write_text("")
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("http_server.py")), str(self.port), str(self.calls)],
            env={**os.environ, "MCP_TEST_SERVER_TOKEN": token},
        )
        wait_until(self._listening, timeout=20, what="the MCP HTTP server to listen")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def executed(self) -> list[str]:
        return self.calls.read_text().splitlines()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _processes(name: str) -> list[tuple[int, int]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if name in cmdline:
            found.append((int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])))
    return found


def server_processes(name: str) -> list[int]:
    """Child processes of this one whose command line holds ``name`` (the stdio servers we started)."""
    return [pid for pid, ppid in _processes(name) if ppid == os.getpid()]


def all_processes(name: str) -> list[int]:
    return [pid for pid, _ in _processes(name)]


def descendants(root: int, name: str) -> list[int]:
    """Processes under ``root`` (a worker and its pool) whose command line holds ``name``."""
    parents = dict(_processes(""))
    found = []
    for pid, _ in _processes(name):
        parent = parents.get(pid)
        while parent and parent != root:
            parent = parents.get(parent)
        if parent == root:
            found.append(pid)
    return found


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
