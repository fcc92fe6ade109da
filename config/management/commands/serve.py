"""The embedded launcher: one command runs the whole production topology on one machine.

Starts a private Redis server (unless REDIS_URL names one), migrates, then runs the ASGI
server, a Celery worker, the audit sealer and Celery beat as child processes, each in its own process group.
If one of them dies, everything stops and the command exits non-zero naming it; Ctrl-C or
SIGTERM stops them all, and the Redis server last.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.management.commands.seed_demo import DEMO_USERS, demo_logins
from audit.redaction import url_masked
from config.embedded import EmbeddedRedis, EmbeddedRedisError, kill_group, spawn, uvicorn_command

READY_TIMEOUT_SECONDS = 60.0
# Celery finishes the task in hand on SIGTERM; tasks are acked late and safe to run again,
# so after this grace a stuck child is killed and its task redelivered.
STOP_GRACE_SECONDS = 10.0


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None


class Command(BaseCommand):
    help = "Run Countersign on this machine: private Redis, ASGI server, Celery worker, audit sealer and beat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes.")

    def handle(self, *args: Any, host: str, port: int, concurrency: int, **options: Any) -> None:
        started = time.monotonic()
        self.stopping: str | None = None
        self.force = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        self.port_check(host, port)

        redis: EmbeddedRedis | None = None
        children: list[Child] = []
        try:
            if settings.EMBEDDED_REDIS:
                redis = EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)
                try:
                    redis.start()
                except EmbeddedRedisError as exc:
                    raise CommandError(str(exc)) from None
                self.stdout.write(f"Redis: private server on {redis.socket_path} (started in {redis.started_in:.3f} s)")
            else:
                self.broker_check()
                self.stdout.write(f"Redis: {url_masked(settings.REDIS_URL)}")
            call_command("migrate", interactive=False, verbosity=0)
            if self.stopping:
                return

            children = self.children(host=host, port=port, concurrency=concurrency)
            env = self.child_env()
            for child in children:
                child.process = spawn(child.args, env=env, cwd=settings.BASE_DIR)
                self.stdout.write(f"{child.name}: pid {child.process.pid}")
            self.wait_ready(children, host=host, port=port)
            if not self.stopping:
                self.banner(host=host, port=port, ready_in=time.monotonic() - started)
            self.supervise(children)
        finally:
            self.stop_all(children, redis)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping is not None:
            # A second Ctrl-C: the user does not want to wait for the grace period.
            self.force = True
        self.stopping = signal.Signals(signum).name

    def port_check(self, host: str, port: int) -> None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise CommandError(
                    f"Cannot listen on {host}:{port} ({exc.strerror}): stop what uses it, "
                    f"or choose another port (manage.py serve --port {port + 1}, or make run PORT={port + 1})."
                ) from None

    def broker_check(self) -> None:
        from config.celery import broker_redis

        client = broker_redis(timeout=2)
        try:
            client.ping()
        except Exception as exc:
            raise CommandError(
                f"REDIS_URL={url_masked(settings.REDIS_URL)} does not answer ({exc}): start that Redis, "
                "or unset REDIS_URL to use the private embedded one."
            ) from None
        finally:
            client.close()

    def children(self, *, host: str, port: int, concurrency: int) -> list[Child]:
        python = sys.executable
        return [
            Child("web (uvicorn)", uvicorn_command(host=host, port=port)),
            Child(
                "celery worker",
                [python, "-m", "celery", "-A", "config", "worker", "-Q", settings.CELERY_WORKER_QUEUES]
                + ["-c", str(concurrency), "--pool", "prefork", "--loglevel", "INFO"]
                + ["-n", f"countersign-{uuid.uuid4().hex[:8]}@%h", "--without-mingle", "--without-gossip"],
            ),
            # Seals audit events within a fraction of a second; the beat's seal task is its fallback.
            Child("audit sealer", [python, "manage.py", "audit_seal", "--loop"]),
            Child(
                "celery beat",
                [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"]
                + ["--schedule", str(settings.VAR_DIR / "celerybeat-schedule")],
            ),
        ]

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The children must compute the same embedded URLs (socket, SQLite file) as this process.
        env["COUNTERSIGN_VAR_DIR"] = str(settings.VAR_DIR)
        env["DJANGO_SETTINGS_MODULE"] = os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def wait_ready(self, children: list[Child], *, host: str, port: int) -> None:
        """Ready when the web server accepts connections and a worker has run ``config.ping``."""
        from config.celery import broker_redis, ping

        key = f"countersign:serve:ready:{uuid.uuid4().hex}"
        ping.delay(key)
        client = broker_redis(timeout=1)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        web_up = worker_up = False
        try:
            while not (web_up and worker_up):
                self.check_children(children)
                if self.stopping:
                    return
                if time.monotonic() > deadline:
                    missing = ", ".join(n for n, up in (("web", web_up), ("worker", worker_up)) if not up)
                    raise CommandError(f"Not ready after {READY_TIMEOUT_SECONDS:.0f} s (waiting for: {missing}).")
                if not web_up:
                    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                        web_up = probe.connect_ex((host, port)) == 0
                if not worker_up:
                    worker_up = bool(client.exists(key))
                time.sleep(0.02)
            client.delete(key)
        finally:
            client.close()

    def check_children(self, children: list[Child]) -> None:
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                raise CommandError(
                    f"{child.name} exited with code {child.process.returncode}; stopped everything "
                    "(its output is above)."
                )

    def banner(self, *, host: str, port: int, ready_in: float) -> None:
        shown_host = f"[{host}]" if ":" in host else host
        lines = [
            "",
            "=" * 72,
            f"Countersign is ready at http://{shown_host}:{port}/  (started in {ready_in:.1f} s)",
            f"  sign in: http://{shown_host}:{port}/accounts/login/   health: /healthz   metrics: /metrics",
        ]
        from django.contrib.auth.models import User

        if User.objects.filter(username__in=[user.username for user in DEMO_USERS]).exists():
            lines += ["Demo logins (username / password):", *demo_logins()]
        else:
            lines.append("No demo users yet: run `manage.py seed_demo` (make run does).")
        lines += ["Press Ctrl-C to stop everything.", "=" * 72, ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def supervise(self, children: list[Child]) -> None:
        while not self.stopping:
            self.check_children(children)
            time.sleep(0.2)
        self.stdout.write(f"\n{self.stopping}: stopping Countersign…")

    def stop_all(self, children: list[Child], redis: EmbeddedRedis | None) -> None:
        running = [child.process for child in children if child.process is not None]
        # Signal every child first, then wait: they shut down in parallel.
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(p.poll() is None for p in running) and time.monotonic() < deadline and not self.force:
            time.sleep(0.05)
        for process in running:
            kill_group(process)
        # Redis last: the worker and beat disconnect cleanly before it goes.
        if redis is not None:
            redis.stop()
        if running or redis is not None:
            self.stdout.write("Stopped.")
