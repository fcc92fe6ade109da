"""Fixtures that run real processes: the private Redis, a Celery worker, an ASGI server, Chromium.

Loaded by ``tests/conftest.py`` (``pytest_plugins``). The worker and the server are other
processes: they see only committed rows, so the fixtures that start them also request
``transactional_db`` and point the children at the test database.

Where a machine lacks a part (Chromium, PostgreSQL), the test says so and is skipped;
under ``CI=true`` a missing part is a failure instead.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connections

from audit.redaction import url_masked
from config.embedded import EmbeddedRedis, EmbeddedRedisError, kill_group, spawn, stop_group, uvicorn_command

BASE_DIR = Path(settings.BASE_DIR)
CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = BASE_DIR / "tests" / "e2e" / "artifacts"
START_TIMEOUT = 60.0


def missing(reason: str) -> None:
    """Skip a test whose part is missing on this machine; fail instead under CI=true."""
    if CI:
        pytest.fail(f"{reason} (CI=true: a missing part is a failure)", pytrace=False)
    pytest.skip(reason)


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.02, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_database_url() -> str:
    """A DATABASE_URL naming the test database (call after the test database is set up)."""
    connection = connections["default"]
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        if name == ":memory:" or "mode=memory" in name:
            raise RuntimeError("an in-memory SQLite test database cannot be shared with a worker process")
        return f"sqlite:///{Path(name).resolve()}"
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


def live_env() -> dict[str, str]:
    """The environment of a child process: the same settings, the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = child_database_url()
    env["COUNTERSIGN_VAR_DIR"] = str(settings.VAR_DIR)
    if settings.EMBEDDED_REDIS:
        env.pop("REDIS_URL", None)
    else:
        env["REDIS_URL"] = settings.REDIS_URL
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # The test hashes passwords with MD5 (tests/conftest.py): the child must verify them, and fast.
    env["COUNTERSIGN_FAST_PASSWORD_HASHER"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def broker_client() -> Any:
    from config.celery import broker_redis

    return broker_redis(timeout=2)


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def embedded_redis() -> Iterator[EmbeddedRedis | None]:
    """The private Redis of the embedded stack, for the whole session; on the real stack,
    the configured Redis database is flushed so no earlier session's messages linger."""
    if settings.EMBEDDED_REDIS:
        server = EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)
        try:
            server.start()
        except EmbeddedRedisError as exc:
            pytest.exit(f"Cannot start the embedded Redis: {exc}", returncode=3)
        try:
            yield server
        finally:
            server.stop()
        return
    client = broker_client()
    try:
        client.flushdb()
    except Exception as exc:
        pytest.exit(
            f"REDIS_URL={url_masked(settings.REDIS_URL)} does not answer ({exc}): start it or unset REDIS_URL.", 3
        )
    finally:
        client.close()
    yield None


def queues_purge() -> None:
    """Drop messages left by an earlier test (including unacknowledged ones a killed worker
    held, which would otherwise be redelivered into a later test)."""
    client = broker_client()
    try:
        names = [name.strip() for name in settings.CELERY_WORKER_QUEUES.split(",")]
        keys = [key for name in names for key in client.scan_iter(match=f"{name}*")]
        client.delete(*keys, "unacked", "unacked_index")
    finally:
        client.close()


# --- Processes -----------------------------------------------------------------------------


class LiveProcess:
    """A child process in its own process group, with its output in a log file under VAR_DIR."""

    name = "process"

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        self.proc: Any = None
        self.log_path = Path(settings.VAR_DIR) / f"live-{self.name}.log"
        self.extra_env = dict(env or {})  # on top of live_env(): settings this process runs with

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = spawn(self.command(), env={**live_env(), **self.extra_env}, cwd=BASE_DIR, output=log)
        try:
            self.wait_ready()
        except Exception as exc:
            self.kill()
            raise RuntimeError(f"{self.name} did not start: {exc}\n--- {self.log_path} ---\n{self.log_tail()}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process and its children at once, as a crash would."""
        if self.proc is not None:
            kill_group(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_started(self) -> None:
        if not self.running:
            self.start()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class CeleryWorker(LiveProcess):
    name = "worker"

    def __init__(self) -> None:
        super().__init__()
        self.nodename = f"live-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Empty the queues and wait until no task is running: a task still writing while the
        test database is flushed would deadlock with the TRUNCATE or leak rows into the next test."""
        from config.celery import app

        queues_purge()
        if not self.running:
            return

        def idle() -> bool:
            replies = app.control.inspect(destination=[self.nodename], timeout=0.5).active() or {}
            return self.nodename in replies and not replies[self.nodename]

        wait_until(idle, timeout=timeout, interval=0.05, what="the worker to finish its tasks")

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            settings.CELERY_WORKER_QUEUES,
            "-c",
            "2",
            "--pool",
            "prefork",
            "--loglevel",
            "INFO",
            "-n",
            self.nodename,
            "--without-mingle",
            "--without-gossip",
        ]

    def wait_ready(self) -> None:
        # Ready means it has taken a task off the broker, not merely started.
        from config.celery import ping

        key = f"countersign:test:ready:{uuid.uuid4().hex}"
        ping.delay(key)
        client = broker_client()
        try:

            def done() -> bool:
                self.check_alive()
                return bool(client.exists(key))

            wait_until(done, timeout=START_TIMEOUT, what="the worker to run config.ping")
            client.delete(key)
        finally:
            client.close()


class AsgiServer(LiveProcess):
    name = "asgi"

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        super().__init__(env=env)
        self.port = free_port()
        if env:
            self.log_path = self.log_path.with_name(f"live-{self.name}-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # The command of manage.py serve (proxy headers off), on a free port.
        return uvicorn_command(host="127.0.0.1", port=self.port, graceful_shutdown_seconds=2) + [
            "--log-level",
            "warning",
        ]

    def wait_ready(self) -> None:
        def answers() -> bool:
            self.check_alive()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/accounts/login/")
                return conn.getresponse().status < 500
            except OSError:
                return False
            finally:
                conn.close()

        wait_until(answers, timeout=START_TIMEOUT, what=f"the ASGI server on port {self.port}")

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)


@pytest.fixture(scope="session")
def _live_worker(django_db_setup: None, embedded_redis: EmbeddedRedis | None) -> Iterator[CeleryWorker]:
    worker = CeleryWorker()
    try:
        yield worker
    finally:
        # Before the test database is dropped: a connected worker would block the DROP.
        worker.stop()


@pytest.fixture
def celery_worker(_live_worker: CeleryWorker, transactional_db: None) -> Iterator[CeleryWorker]:
    """A real ``celery -A config worker -Q sweeps,resumes,runs,default -c 2`` process on the test database.

    Requests ``transactional_db``: the worker is another process and sees only committed
    rows. Use ``@pytest.mark.django_db(transaction=True)`` on such tests for clarity.
    Started once per session; each test gets empty queues and a running worker.
    ``.kill()`` SIGKILLs it (and its pool), ``.restart()`` brings up a fresh one, ``.proc``
    is the ``Popen`` of the main process.
    """
    queues_purge()
    _live_worker.ensure_started()
    yield _live_worker
    _live_worker.wait_idle()


@pytest.fixture(scope="session")
def _live_asgi(django_db_setup: None, embedded_redis: EmbeddedRedis | None) -> Iterator[AsgiServer]:
    server = AsgiServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def asgi_server(_live_asgi: AsgiServer, transactional_db: None) -> AsgiServer:
    """A real uvicorn process serving ``config.asgi:application`` on the test database.

    Requests ``transactional_db`` (it is another process). ``.url`` and ``.ws_url`` are
    its base URLs; ``.stop()`` and ``.start()`` stop it and start it again on the same port.
    """
    _live_asgi.ensure_started()
    return _live_asgi


# --- Browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright's sync API (one per test module)."""
    if not os.path.exists(CHROMIUM):
        missing(f"Chromium is not installed at {CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright is not installed: pip install -r requirements-dev.txt")
    # Playwright's sync API keeps an event loop running in this thread, which makes Django
    # refuse ORM calls from the test; they are still plain synchronous calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    except Exception as exc:
        playwright.stop()
        missing(f"Chromium at {CHROMIUM} does not start: {exc}")
    try:
        yield instance
    finally:
        instance.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; a screenshot of the last state is saved
    to tests/e2e/artifacts/ when the test ends."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    instance = context.new_page()
    try:
        yield instance
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
        with contextlib.suppress(Exception):
            instance.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        context.close()


# --- Markers -------------------------------------------------------------------------------


def pytest_runtest_setup(item: pytest.Item) -> None:
    # The embedded run of CI uses SQLite on purpose; its real-stack run covers these.
    if item.get_closest_marker("postgres") and not settings.IS_POSTGRES:
        pytest.skip("about PostgreSQL behaviour: run with DATABASE_URL=postgres://... to include it")
