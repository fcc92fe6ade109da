"""The processes of one fault scenario, on endpoints of its own.

Each scenario gets a private Redis (``EmbeddedRedis`` on a socket of its own, so it can be
stopped and wiped without touching the session's Redis, and a worker left over by another
test module can never take its tasks), and starts its own ASGI servers, Celery workers, beats
and sweepers on it: ``tests.live``'s process classes, with the scenario's environment put in
front of their command by ``env``. The PostgreSQL restart scenario also gets a private
PostgreSQL cluster (``PrivatePostgres``), made with initdb in a temporary directory.

The shared servers of the machine (PostgreSQL on 5432, Redis on 6379) are never stopped.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from config.embedded import EmbeddedRedis
from tests.live import (
    BASE_DIR,
    START_TIMEOUT,
    AsgiServer,
    CeleryWorker,
    LiveProcess,
    child_database_url,
    free_port,
    live_env,
    missing,
    wait_until,
)

FAULTS_DIR = Path(settings.VAR_DIR) / "faults"

# The children's clocks, short enough that a scenario sees recovery within seconds: a dead
# worker's lease runs out after 4 s, the sweeper runs every second and re-rings a doorbell lost
# for 2 s. The values the README documents are defaults; these are the same code paths.
TIMINGS = {
    "RUN_LEASE_SECONDS": "4",
    "RUN_REQUEUE_AFTER_SECONDS": "2",
    "SWEEP_INTERVAL_SECONDS": "1",
    "TOOL_RETRY_BASE_SECONDS": "0.05",
}


class Stack:
    """What the processes of one scenario connect to, and the environment they share."""

    def __init__(self, name: str, *, redis_url: str, database_url: str | None = None, **env: str) -> None:
        self.name = name
        self.dir = FAULTS_DIR / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.database_url = database_url or child_database_url()
        self.env = {**TIMINGS, **env}
        self.processes: list[LiveProcess] = []
        self.private_redis: PrivateRedis | None = None  # set by the stack fixture

    def child_env(self, **overrides: str) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url, **self.env, **overrides}

    def full_env(self, **overrides: str) -> dict[str, str]:
        """live_env() with this stack's endpoints: for a one-off child (migrate, a check)."""
        return {**live_env(), **self.child_env(**overrides)}

    # Factories: every process is remembered and stopped by stop_all().

    def worker(self, label: str = "worker", **env: str) -> Worker:
        return self._add(Worker(self, label, **env))

    def server(self, label: str = "asgi", **env: str) -> Server:
        return self._add(Server(self, label, **env))

    def beat(self, label: str = "beat", **env: str) -> Beat:
        return self._add(Beat(self, label, **env))

    def sweeper(self, label: str = "sweeper", **env: str) -> Sweeper:
        return self._add(Sweeper(self, label, **env))

    def _add(self, process: Any) -> Any:
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """Sweepers and beats first (they ring), then servers, then workers (a warm shutdown
        lets a running task end before the test database is flushed)."""
        order = {Sweeper: 0, Beat: 1, Server: 2, Worker: 3}
        for process in sorted(self.processes, key=lambda p: order.get(type(p), 9)):
            with contextlib.suppress(Exception):
                process.stop()


class StackProcess:
    """A ``tests.live`` process with its stack's environment on top of ``live_env()``, a label,
    and a numbered log per start (the log of a killed incarnation is kept for the post-mortem)."""

    stack: Stack
    label: str
    starts: int

    def __init__(self, stack: Stack, label: str, **env: str) -> None:
        super().__init__()  # type: ignore[call-arg]
        self.stack = stack
        self.label = label
        self.overrides = env
        self.starts = 0

    def command(self) -> list[str]:
        variables = [f"{key}={value}" for key, value in self.stack.child_env(**self.overrides).items()]
        return ["env", *variables, *self.program()]

    def program(self) -> list[str]:
        return super().command()  # type: ignore[misc,no-any-return]

    def start(self) -> None:
        if self.running:  # type: ignore[attr-defined]
            return
        self.starts += 1
        self.log_path = self.stack.dir / f"{self.label}.{self.starts}.log"
        super().start()  # type: ignore[misc]

    def log_text(self) -> str:
        texts = []
        for number in range(1, self.starts + 1):
            with contextlib.suppress(OSError):
                texts.append((self.stack.dir / f"{self.label}.{number}.log").read_text(errors="replace"))
        return "\n".join(texts)


def pool_pids(pid: int) -> list[int]:
    """The children of a process (a prefork worker's pool), from /proc."""
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            found += [int(value) for value in Path(path).read_text().split()]
    return sorted(set(found))


class Worker(StackProcess, CeleryWorker):
    """``celery worker -Q sweeps,resumes,runs,default -c 2`` on the stack's broker."""

    def wait_ready(self) -> None:
        # Ready when its consumer says so ("<nodename> ready.": connected, queues bound, pool up).
        # tests.live sends a config.ping task instead; on a busy stack that task waits behind the
        # runs and resumes queues, which workers drain first, for as long as they are not empty.
        marker = f"{self.nodename} ready."
        wait_until(
            lambda: self.check_alive() or marker in self.log_path.read_text(errors="replace"),
            timeout=START_TIMEOUT,
            interval=0.02,
            what=f"{self.label} to be ready",
        )

    def pool(self) -> list[int]:
        return pool_pids(self.proc.pid) if self.running else []

    def kill_pool(self) -> list[int]:
        """SIGKILL every pool process (the main process stays and forks new ones); the pids killed."""
        killed = []
        for pid in self.pool():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed

    def wait_pool(self, killed: list[int], size: int = 2, timeout: float = 30.0) -> None:
        """Until the main process has forked ``size`` new pool processes in place of ``killed``."""

        def replaced() -> bool:
            self.check_alive()
            fresh = [pid for pid in self.pool() if pid not in killed and alive(pid)]
            return len(fresh) >= size

        wait_until(replaced, timeout=timeout, what=f"{self.label}'s pool to be replaced")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Server(StackProcess, AsgiServer):
    """uvicorn serving config.asgi:application on the stack."""


class Beat(StackProcess, LiveProcess):
    """``celery beat``: the sweeper every SWEEP_INTERVAL_SECONDS; each its own schedule file."""

    name = "beat"

    def program(self) -> list[str]:
        schedule = self.stack.dir / f"{self.label}-schedule"
        return [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "-s", str(schedule)]

    def wait_ready(self) -> None:
        wait_until(
            lambda: self.check_alive() or "Sending due task sweep" in self.log_path.read_text(errors="replace"),
            timeout=START_TIMEOUT,
            what=f"{self.label} to send its first sweep",
        )

    def sweeps_sent(self) -> int:
        return self.log_text().count("Sending due task sweep")


class Sweeper(StackProcess, LiveProcess):
    """``agents.tasks.sweep`` called in a tight loop in a process of its own (tests/faults/sweeper.py)."""

    name = "sweeper"

    def program(self) -> list[str]:
        return [sys.executable, "-m", "tests.faults.sweeper"]

    def wait_ready(self) -> None:
        wait_until(
            lambda: self.check_alive() or "sweeper: swept" in self.log_path.read_text(errors="replace"),
            timeout=START_TIMEOUT,
            what=f"{self.label} to sweep once",
        )

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for line in self.log_text().splitlines():
            if line.startswith("sweeper: totals "):
                for key, value in json.loads(line.removeprefix("sweeper: totals ")).items():
                    totals[key] = totals.get(key, 0) + value
        return totals


class PrivateRedis:
    """A redis-server of the scenario's own on a unix socket, without persistence: a restart
    starts it empty (queues, unacknowledged messages, channel-layer groups: all gone)."""

    def __init__(self, stack_dir: Path) -> None:
        stack_dir.mkdir(parents=True, exist_ok=True)
        self.server = EmbeddedRedis(stack_dir / "redis.sock")
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"unix://{self.server.socket_path}"

    def start(self) -> None:
        self.server.start()

    def kill(self) -> None:
        """SIGKILL, as a crash would (no persistence: the data is gone)."""
        if self.server.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.server.process.kill()
            self.server.process.wait(timeout=10)
        self.server.stop()

    def restart_empty(self) -> None:
        self.kill()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        self.server.stop()


# --- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster of the scenario's own: initdb in a temporary directory, pg_ctl on a
    free port, trust authentication on loopback. As root it runs as the ``postgres`` user
    (PostgreSQL refuses to run as root). ``restart(mode)`` is ``pg_ctl restart -m fast|immediate``."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            missing("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
        self.bin = bindir
        self.user: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                missing("running as root and there is no postgres user to run a private PostgreSQL cluster as")
            self.user = (entry.pw_uid, entry.pw_gid)
        self.root = Path(tempfile.mkdtemp(prefix="countersign-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.restarts = 0
        if self.user is not None:
            os.chown(self.root, *self.user)

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            **kwargs,
        )

    def init(self) -> None:
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr}") from exc
        with (self.data / "postgresql.conf").open("a") as conf:
            # fsync off: only an operating-system crash would need it, and none is simulated;
            # a killed server (restart -m immediate) recovers committed work from its WAL.
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"
            )

    def start(self) -> None:
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{self.log_tail()}")

    def restart(self, mode: str = "fast") -> float:
        """Stop (fast: connections are cut; immediate: the server is killed and recovers from its
        WAL) and start again. Returns how long the database was unavailable, in seconds."""
        started = time.monotonic()
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-m", mode, "restart", check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {result.stderr}\n{self.log_tail()}")
        self.restarts += 1
        return time.monotonic() - started

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop", check=False)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def manage(stack: Stack, *args: str, timeout: float = 300) -> str:
    """Run ``manage.py`` against the stack's database (migrate a private database, and so on)."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        env=stack.full_env(),
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def python_module(stack: Stack, module: str, *args: str, stdin: str = "", timeout: float = 300) -> str:
    """Run ``python -m module`` against the stack (the same code the test runs in-process, for a
    database the test process is not connected to)."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=stack.full_env(),
        cwd=BASE_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"python -m {module} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout
