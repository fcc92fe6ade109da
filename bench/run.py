"""``python -m bench [--stack embedded|real|both]``: start the real processes, measure, print
the table and write bench/results/<date>-<stack>.json.

With ``both`` (the default) each stack is measured by a child ``python -m bench --stack X``
in an environment of its own (bench/stack.py): Django reads its settings once per process.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.stack import BASE_DIR, STACKS, stack_env
from bench.stats import Measure, results_document, results_write, table

if TYPE_CHECKING:
    from bench.world import World

RESULTS = BASE_DIR / "bench" / "results"
# Sized for about four minutes a stack on a 2-core machine.
CHECKPOINTS = 100
FANOUT_SOCKETS = 500
FANOUT_EVENTS = 5
RESUMES = 30
NOOP_RUNS = 20
BURST_RUNS = 200
DECISIONS = 160
DECISION_CLIENTS = 8
AUDIT_APPENDS = 2400  # a few seconds each: 800 ended before eight writer processes were all at full speed
SEAL_EVENTS = 500
FILL = 100_000
PAGE_REQUESTS = 30


def machine() -> str:
    cores = os.cpu_count() or 0
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{platform.machine()}, {cores} cores{memory}, {system}, Python {platform.python_version()}"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


PHASES = ("step", "checkpoint", "fanout", "resume", "throughput", "decisions", "audit", "seal", "pages")


def measure_stack(stack: str, *, scale: float, only: frozenset[str] = frozenset(PHASES)) -> list[Measure]:
    """Everything (or the phases in ``only``), in an order that keeps each measure's
    preconditions: no worker while runs are driven in this process, the worker up for resumes
    and throughput, none for the pages."""
    from bench import stack as parts

    parts.django_setup()
    from django.db import connection

    from bench import capacity, latency
    from bench.progress import say
    from bench.world import checkpoint_reach, runs_waiting, world_create
    from tests.live import queues_purge

    def sized(n: int) -> int:
        return max(int(n * scale), 2)

    measures: list[Measure] = []
    with parts.redis_running():
        world = world_create()
        asgi = parts.asgi_server()
        worker = parts.worker()
        asgi.start()
        try:
            if "step" in only:
                say(f"[{stack}] {connection.vendor}: orchestration per step")
                measures.append(capacity.step_overhead(world, runs=sized(NOOP_RUNS)))
            if "checkpoint" in only:
                say(f"[{stack}] checkpoint → browser")
                measures.append(latency.checkpoint_to_browser(asgi, world, n=sized(CHECKPOINTS)))
            if "fanout" in only:
                say(f"[{stack}] fan-out to {FANOUT_SOCKETS}")
                measures.append(latency.fanout(asgi, world, sockets=FANOUT_SOCKETS, events=sized(FANOUT_EVENTS)))
            queues_purge()  # the doorbells of the runs driven here: no worker must take them later
            if {"resume", "throughput"} & only:
                worker.start()
                say(f"[{stack}] decision → resume; runs through 2 worker processes")
                if "resume" in only:
                    resumes = sized(RESUMES)
                    while len(runs_waiting()) < resumes:
                        checkpoint_reach(world)
                    measures.append(latency.decision_to_resume(asgi, world, runs_waiting()[:resumes]))
                if "throughput" in only:
                    measures.extend(capacity.runs_and_steps_per_second(world, runs=sized(BURST_RUNS)))
                worker.wait_idle()
                worker.stop()
            if "decisions" in only:
                decisions = sized(DECISIONS)
                for _ in range(decisions - len(runs_waiting())):
                    checkpoint_reach(world)
                say(f"[{stack}] {decisions} decisions from {DECISION_CLIENTS} clients")
                measures.append(
                    capacity.decisions_per_second(asgi.url, world, runs_waiting()[:decisions], clients=DECISION_CLIENTS)
                )
                queues_purge()
            if "audit" in only:
                say(f"[{stack}] audit appends, verify, export")
                measures.extend(capacity.audit_measures(appends=sized(AUDIT_APPENDS)))
            if "seal" in only:
                say(f"[{stack}] seal lag")
                measures.append(capacity.audit_seal_lag(events=sized(SEAL_EVENTS)))
            if "pages" in only:
                measures.extend(_pages(asgi.url, world, fill=sized(FILL), requests=sized(PAGE_REQUESTS)))
        finally:
            worker.stop()
            asgi.stop()
    return measures


def _pages(base_url: str, world: World, *, fill: int, requests: int) -> list[Measure]:
    from agents.tasks import rollup
    from bench import pages
    from bench.fill import waiting_runs_fill
    from bench.progress import say
    from bench.world import checkpoint_reach

    credentials = {
        "token": world.reviewer_token,
        "reviewer_cookie": world.reviewer_cookie,
        "operator_cookie": world.operator_cookie,
    }
    small = {page.name: pages.page_time(base_url, page, n=requests, **credentials) for page in pages.PAGES}
    say(f"filling {fill:,} waiting runs with their steps and approvals")
    waiting_runs_fill(checkpoint_reach(world), count=fill)
    # What the periodic task (agents.tasks.rollup, every 5 minutes) would have done by now: the
    # hours that closed are rolled up; the pages read the roll-up and count the rest live.
    say("rolling up the closed hours, as the periodic task does")
    rollup.apply().get()
    return [
        pages.page_measure(
            page, small=small[page.name], large=pages.page_time(base_url, page, n=requests, **credentials)
        )
        for page in pages.PAGES
    ]


def run_stack(stack: str, *, scale: float, only: frozenset[str]) -> int:
    measures = measure_stack(stack, scale=scale, only=only)
    document = results_document(stack=stack, machine=machine(), commit=commit(), measures=measures)
    print(f"\n{stack} stack ({document['machine']}, commit {document['commit']}):")
    print(table(measures))
    if only == frozenset(PHASES):  # a partial run is a check, not a result
        path = results_write(document, directory=RESULTS, date=datetime.date.today().isoformat())
        print(f"written to {path.relative_to(BASE_DIR)}")
    return 0


def phases(text: str) -> frozenset[str]:
    chosen = frozenset(name.strip() for name in text.split(",") if name.strip())
    if unknown := chosen - frozenset(PHASES):
        raise argparse.ArgumentTypeError(f"unknown phase {', '.join(sorted(unknown))}; phases: {', '.join(PHASES)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=[*STACKS, "both"], default="both")
    parser.add_argument(
        "--var-dir", type=Path, default=BASE_DIR / "var" / "bench", help="where each stack keeps its files"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every n by this (a quick check: 0.1)")
    parser.add_argument(
        "--only",
        type=phases,
        default=frozenset(PHASES),
        help=f"comma-separated phases, for a check that writes no results ({', '.join(PHASES)})",
    )
    args = parser.parse_args(argv)
    if args.stack != "both" and os.environ.get("COUNTERSIGN_BENCH_CHILD"):
        return run_stack(args.stack, scale=args.scale, only=args.only)
    stacks = STACKS if args.stack == "both" else (args.stack,)
    failed = 0
    for stack in stacks:
        env = stack_env(stack, base=dict(os.environ), var_dir=args.var_dir.resolve())
        env["COUNTERSIGN_BENCH_CHILD"] = "1"
        command = [sys.executable, "-m", "bench", "--stack", stack, "--scale", str(args.scale)]
        command += ["--only", ",".join(sorted(args.only))]
        done = subprocess.run(command, cwd=BASE_DIR, env=env, check=False)
        failed += done.returncode != 0
    return 1 if failed else 0
