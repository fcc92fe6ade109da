"""Per-step cost and throughput: orchestration per step, runs and steps a second with two
worker processes, decisions a second through the API, audited appends and the seal lag."""

from __future__ import annotations

import importlib
import os
import queue
import threading
import time
from collections.abc import Callable
from io import StringIO

from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import TERMINAL_RUN_STATUSES, Run, Step
from agents.runtime import run_advance, run_create
from agents.tasks import advance_run
from approvals.models import ApprovalRequest
from audit.models import AuditEvent
from audit.services import audit_record
from bench.audit_writers import AUDIT_DATA, audit_appends_in_processes
from bench.http import Http
from bench.progress import progress, say
from bench.stats import Goal, Measure
from bench.world import World
from tests.live import wait_until


def insert_floor_ms(*, n: int) -> float:
    """A single-row INSERT and its commit, the least a step's own transaction can cost."""
    with connection.cursor() as cursor:
        key = "INTEGER PRIMARY KEY" if connection.vendor == "sqlite" else "SERIAL PRIMARY KEY"
        cursor.execute(f"CREATE TABLE IF NOT EXISTS bench_floor (id {key}, v INTEGER NOT NULL)")
    samples = []
    for index in range(n):
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_floor (v) VALUES (%s)", [index])
        samples.append((time.perf_counter() - started) * 1000)
    return Measure(name="floor", unit="ms", samples=samples).value("p50") or 0.0


def step_overhead(world: World, *, runs: int) -> Measure:
    """The gaps between consecutive calls of the no-op tool in a run driven in this process:
    reason, check, record and execute one step, with no tool work and no broker in between."""
    floor = insert_floor_ms(n=200)
    gaps: list[float] = []
    for _ in progress(range(runs), desc="step overhead"):
        world.noop_calls.clear()
        run = run_create(agent=world.noop, user=world.operator, payload={})
        run_advance(run_id=run.pk)
        calls = list(world.noop_calls)
        if len(calls) < 2:
            raise RuntimeError(f"the no-op run took {len(calls)} steps: {Run.objects.get(pk=run.pk).error}")
        gaps.extend((b - a) * 1000 for a, b in zip(calls, calls[1:], strict=False))
    return Measure(
        name="step_overhead_ms", unit="ms", samples=gaps, floor=floor, goals=[Goal("p50", 3)], extra={"runs": runs}
    )


def runs_and_steps_per_second(world: World, *, runs: int) -> list[Measure]:
    """A burst of research runs (one search, one answer) drained by the worker's two processes."""
    made = Run.objects.bulk_create(
        [Run(agent=world.research, started_by=world.operator, input={"question": "refund"}) for _ in range(runs)]
    )
    ids = [run.pk for run in made]
    Run.objects.filter(pk__in=ids).update(enqueued_at=timezone.now())
    started = time.monotonic()
    for run_id in ids:
        advance_run.delay(run_id)

    def finished() -> bool:
        return not Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL_RUN_STATUSES).exists()

    wait_until(finished, timeout=300, interval=0.05, what=f"{runs} runs to finish")
    seconds = time.monotonic() - started
    steps = Step.objects.filter(run_id__in=ids).count()
    return [
        Measure.rate("runs_per_s", count=runs, seconds=seconds),
        Measure.rate("steps_per_s", count=steps, seconds=seconds),
    ]


def decisions_per_second(base_url: str, world: World, approvals: list[ApprovalRequest], *, clients: int) -> Measure:
    todo: queue.Queue[int] = queue.Queue()
    for approval in approvals:
        todo.put(approval.pk)
    refused: list[int] = []

    def client() -> None:
        api = Http(base_url, token=world.reviewer_token)
        try:
            while True:
                try:
                    approval_id = todo.get_nowait()
                except queue.Empty:
                    return
                answer = api.request("POST", f"/api/v1/approvals/{approval_id}/decision/", {"verdict": "approve"})
                if answer.status != 200:
                    refused.append(answer.status)
        finally:
            api.close()

    seconds = _threads(clients, client)
    if refused:
        raise RuntimeError(f"{len(refused)} decisions were refused: {sorted(set(refused))}")
    return Measure.rate("decisions_per_s", count=len(approvals), seconds=seconds, extra={"clients": clients})


def _threads(count: int, work: Callable[[], None]) -> float:
    """Run ``work`` in ``count`` threads, each with its own connection, started together; seconds taken."""
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body() -> None:
        connection.ensure_connection()  # connect before the clock starts
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def audit_appends(*, writers: int, per_writer: int) -> Measure:
    """Audited transactions a second from ``writers`` concurrent writer processes."""
    run = audit_appends_in_processes(writers=writers, per_writer=per_writer)
    say(
        f"  {writers} writer(s): {run.per_second:.0f}/s; CPU per append: client {run.client_cpu_ms:.3f} ms, "
        f"PostgreSQL backend {'-' if run.backend_cpu_ms is None else f'{run.backend_cpu_ms:.3f}'} ms; "
        f"cores busy {run.machine_busy_cores:.2f} of {os.cpu_count()}, "
        f"the writers' share {run.extra()['writer_cores']}; "
        f"heavyweight locks waited for: {run.extra()['ungranted_locks']}; "
        f"backend states sampled: {run.extra()['backend_waits']}"
    )
    return Measure.rate(f"audit_appends_per_s_{writers}", count=run.appends, seconds=run.seconds, extra=run.extra())


def audit_measures(*, appends: int) -> list[Measure]:
    one = audit_appends(writers=1, per_writer=appends)
    eight = audit_appends(writers=8, per_writer=appends // 8)
    one_rate = one.value("p50") or 0.0
    eight.goals = [Goal("p50", 3 * one_rate, at_most=False)]  # 8 writers ≥ 3 × one writer
    count = AuditEvent.objects.count()
    started = time.monotonic()
    out = StringIO()
    call_command("audit_verify", stdout=out)
    verify = Measure.rate("audit_verify_events_per_s", count=count, seconds=time.monotonic() - started)
    if "chain intact" not in out.getvalue():
        raise RuntimeError(f"audit_verify: {out.getvalue()[:500]}")
    started = time.monotonic()
    call_command("audit_export", since="2000-01-01", format="jsonl", stdout=StringIO())
    export = Measure.rate("audit_export_events_per_s", count=count, seconds=time.monotonic() - started)
    return [one, eight, verify, export]


SEAL_GOALS = [Goal("p99", 2000)]


def audit_seal_lag(*, events: int) -> Measure:
    """An event's commit → the sealer having given it its place (AuditEvent.sequence set), with
    a sealer thread calling ``audit.sealer.seal_pending()`` back to back while a writer appends."""
    try:
        sealer = importlib.import_module("audit.sealer")
    except ImportError:
        return Measure.missing("audit_seal_lag_ms", unit="ms", note="no audit.sealer", goals=SEAL_GOALS)
    committed: dict[int, float] = {}
    lags: list[float] = []
    writing = threading.Event()
    writing.set()

    def write() -> None:
        try:
            for _ in range(events):
                event = audit_record(actor=None, action="bench.seal", data=AUDIT_DATA)
                committed[event.pk] = time.perf_counter()  # autocommit: committed on return
                time.sleep(0.002)  # a steady stream, not one batch
        finally:
            writing.clear()
            connection.close()

    def seal() -> None:
        try:
            while writing.is_set() or len(lags) < len(committed):
                sealer.seal_pending()
                now = time.perf_counter()
                waiting = [pk for pk in committed if pk not in sealed]
                # AuditEvent.sequence comes with the sealer: written to its contract, not to this schema.
                done = AuditEvent.objects.filter(Q(("sequence__isnull", False)), pk__in=waiting)
                for pk in done.values_list("pk", flat=True):
                    sealed.add(pk)
                    lags.append((now - committed[pk]) * 1000)
        finally:
            connection.close()

    sealed: set[int] = set()
    threads = [threading.Thread(target=write), threading.Thread(target=seal)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return Measure(name="audit_seal_lag_ms", unit="ms", samples=lags, goals=SEAL_GOALS)
