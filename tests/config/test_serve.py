"""manage.py serve: the embedded launcher starts everything, supervises it and leaves no orphans."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.live import free_port, wait_until

# About the embedded default itself: it clears DATABASE_URL and REDIS_URL, so the real-stack run
# of CI, which would repeat it exactly, leaves it out (-m 'not embedded').
pytestmark = [pytest.mark.live, pytest.mark.embedded]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


class Launcher:
    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.log = var_dir / "serve.log"
        env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(DEBUG="1", COUNTERSIGN_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
        with self.log.open("wb") as log:
            # Its own session, as a terminal's foreground job would be: Ctrl-C goes to the group.
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(self.port)],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            return "is ready at" in self.output()

        wait_until(ready, timeout=90, interval=0.05, what="serve to be ready")

    def pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"^(.+?): pid (\d+)$", self.output(), re.MULTILINE)}

    def get(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    def wait_exit(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


def test_ready_within_seconds_and_ctrl_c_stops_every_process_it_started(var_dir):
    launcher = Launcher(var_dir)
    try:
        started_at = time.monotonic()
        launcher.wait_ready()
        elapsed = time.monotonic() - started_at
        match = re.search(r"is ready at .*\(started in ([\d.]+) s\)", launcher.output())
        assert match, launcher.output()
        # How long it takes is measured, not asserted: a loaded machine is slower, not broken.
        print(f"\nserve ready {elapsed:.2f} s after exec ({match.group(1)} s inside the command)")
        assert set(launcher.pids()) == {"web (uvicorn)", "celery worker", "audit sealer", "celery beat"}
        assert launcher.get("/healthz") == 200
        assert launcher.get("/accounts/login/") == 200
        assert (var_dir / "redis.sock").exists()
        started = descendants(launcher.proc.pid)
        assert len(started) >= 7  # redis, uvicorn, worker + 2 pool processes, sealer, beat
        os.killpg(launcher.proc.pid, signal.SIGINT)
        assert launcher.wait_exit() == 0
        assert "Stopped." in launcher.output()
        wait_until(lambda: not alive(started), timeout=10, what="every child to exit")
        assert not (var_dir / "redis.sock").exists()
    finally:
        if launcher.proc.poll() is None:
            launcher.proc.kill()


def test_a_dead_child_stops_everything_and_is_named(var_dir):
    launcher = Launcher(var_dir)
    try:
        launcher.wait_ready()
        started = descendants(launcher.proc.pid)
        os.kill(launcher.pids()["celery beat"], signal.SIGKILL)
        assert launcher.wait_exit() != 0
        assert "celery beat exited with code" in launcher.output()
        wait_until(lambda: not alive(started), timeout=15, what="every child to exit")
    finally:
        if launcher.proc.poll() is None:
            launcher.proc.kill()


def test_no_orphans_when_the_launcher_is_killed(var_dir):
    launcher = Launcher(var_dir)
    launcher.wait_ready()
    started = descendants(launcher.proc.pid)
    launcher.proc.kill()
    launcher.wait_exit()
    # The kernel tells each child its parent died (PR_SET_PDEATHSIG).
    wait_until(lambda: not alive(started), timeout=20, what="the orphaned children to exit")


def test_port_in_use_is_reported(var_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(DEBUG="1", COUNTERSIGN_VAR_DIR=str(var_dir))
        result = subprocess.run(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (var_dir / "redis.sock").exists()
