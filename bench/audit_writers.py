"""Audited transactions from writer *processes*, as web and worker processes write them in
production: threads of one process would share its interpreter lock and measure that instead.

Each writer is a spawned process with its own Django and connection; all start together at a
barrier once connected. Each reports its own CPU time and its PostgreSQL backend's (read from
/proc, so only when the database runs on this machine), and the parent samples what the
writers' backends wait on (pg_stat_activity) while they run: the numbers that say whether the
rate is bound by the machine's cores or by something the writers queue on.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

APPLICATION_NAME = "bench-audit-writer"
# A realistic audited body: a tool call's arguments and output.
AUDIT_DATA = {
    "tool": "issue_refund",
    "arguments": {"ticket_id": 17, "amount": 120.5, "currency": "USD", "customer_email": "jane@example.com"},
    "output": {"refund_id": "rf_123456", "status": "issued"},
    "latency_ms": 42,
}
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class WriterReport:
    appends: int
    client_cpu_s: float  # this process: Django, masking, hashing, the driver
    backend_cpu_s: float | None  # its PostgreSQL backend (None: not readable here)


def backend_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a local process, or None when it cannot be read (another host, SQLite)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


def _writer(barrier: Barrier, per_writer: int, results: Any) -> None:
    import django

    django.setup()  # the environment names the settings and the database; no migration here
    from django.db import connection

    from audit.services import audit_record, audited_atomic

    backend: int | None = None
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET application_name = %s", [APPLICATION_NAME])
            cursor.execute("SELECT pg_backend_pid()")
            backend = int(cursor.fetchone()[0])
    barrier.wait()
    client_before = time.process_time()
    backend_before = backend_cpu_seconds(backend) if backend else None
    for _ in range(per_writer):
        # One audited transaction, as a service writes it: BEGIN, the event, COMMIT.
        with audited_atomic():
            audit_record(actor=None, action="bench.append", data=AUDIT_DATA)
    client = time.process_time() - client_before
    backend_after = backend_cpu_seconds(backend) if backend else None
    backend_cpu = backend_after - backend_before if backend_after is not None and backend_before is not None else None
    results.put(WriterReport(per_writer, client, backend_cpu))
    connection.close()


def _sample_waits(stop: threading.Event, waits: Counter[str]) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    try:
        with connection.cursor() as cursor:
            while not stop.is_set():
                cursor.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE application_name = %s",
                    [APPLICATION_NAME],
                )
                for state, kind, event in cursor.fetchall():
                    waits[f"{state}:{kind or 'cpu'}:{event or '-'}"] += 1
                # Heavyweight locks a writer's backend waits for (row, relation, advisory,
                # transaction id): none means nothing of the log's makes appends queue.
                cursor.execute(
                    "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND a.application_name = %s",
                    [APPLICATION_NAME],
                )
                waits["lock not granted"] += int(cursor.fetchone()[0])
                time.sleep(0.02)  # light: the sampler's own queries take CPU the writers would use
    finally:
        connection.close()


@dataclass(frozen=True)
class AppendRun:
    writers: int
    appends: int
    seconds: float
    client_cpu_ms: float  # per append
    backend_cpu_ms: float | None  # per append
    waits: dict[str, int]  # pg_stat_activity samples of the writers' backends: state:wait type:event
    machine_busy_cores: float  # every process's CPU during the run (ours, PostgreSQL's and any other's)

    @property
    def per_second(self) -> float:
        return self.appends / self.seconds

    def extra(self) -> dict[str, Any]:
        cpu = self.client_cpu_ms + (self.backend_cpu_ms or 0.0)
        return {
            "writers": self.writers,
            "processes": True,
            "client_cpu_ms_per_append": round(self.client_cpu_ms, 3),
            "backend_cpu_ms_per_append": None if self.backend_cpu_ms is None else round(self.backend_cpu_ms, 3),
            # What the machine's cores could do if nothing but these appends ran on them.
            "cpu_bound_per_s": round((os.cpu_count() or 1) * 1000 / cpu) if cpu else None,
            # Cores busy during the run, and how many of them the writers and their backends used.
            "machine_busy_cores": round(self.machine_busy_cores, 2),
            "writer_cores": round(self.per_second * cpu / 1000, 2),
            "backend_waits": dict(sorted(self.waits.items(), key=lambda item: -item[1])[:8]),
            "ungranted_locks": self.waits.get("lock not granted", 0),
        }


def audit_appends_in_processes(*, writers: int, per_writer: int) -> AppendRun:
    from django.db import connection

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no connection is inherited
    barrier = context.Barrier(writers + 1)
    results = context.Queue()
    processes = [context.Process(target=_writer, args=(barrier, per_writer, results)) for _ in range(writers)]
    for process in processes:
        process.start()
    waits: Counter[str] = Counter()
    stop = threading.Event()
    connection.close()  # the sampler thread opens its own
    sampler = threading.Thread(target=_sample_waits, args=(stop, waits))
    barrier.wait(timeout=120)
    started = time.monotonic()
    busy_before, _ = machine_cpu_seconds()
    sampler.start()
    reports = [results.get(timeout=300) for _ in processes]
    seconds = time.monotonic() - started
    busy_after, _ = machine_cpu_seconds()
    stop.set()
    sampler.join()
    for process in processes:
        process.join(timeout=30)
        if process.exitcode != 0:
            raise RuntimeError(f"an audit writer process exited with {process.exitcode}")
    appends = sum(report.appends for report in reports)
    backend = [report.backend_cpu_s for report in reports]
    backend_ms = sum(b for b in backend if b is not None) * 1000 / appends if None not in backend else None
    client_ms = sum(report.client_cpu_s for report in reports) * 1000 / appends
    busy = (busy_after - busy_before) / seconds
    return AppendRun(writers, appends, seconds, client_ms, backend_ms, dict(waits), busy)
