"""Audit chain numbers: append throughput under contention, verify and export speed.

AUDIT_BENCH=1 DEBUG=1 COUNTERSIGN_VAR_DIR=var/bench .venv/bin/pytest tests/audit/bench_audit.py -s -q
(add DATABASE_URL=postgres://... for PostgreSQL)
"""

from __future__ import annotations

import os
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEvent
from audit.sealer import seal_pending
from audit.services import audit_record

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("AUDIT_BENCH"), reason="a benchmark: set AUDIT_BENCH=1 to run it"),
]

EVENTS = int(os.environ.get("AUDIT_BENCH_EVENTS", "20000"))
# A realistic body: a tool call's arguments and output.
DATA = {
    "tool": "issue_refund",
    "arguments": {"ticket_id": 17, "amount": 120.5, "currency": "USD", "customer_email": "jane@example.com"},
    "output": {"refund_id": "rf_123456", "status": "issued"},
    "latency_ms": 42,
}


def appends_per_second(threads: int, per_thread: int) -> float:
    start = threading.Barrier(threads + 1)

    def work() -> None:
        connection.ensure_connection()  # connect before the clock starts
        start.wait()
        try:
            for _ in range(per_thread):
                audit_record(actor=None, action="bench.append", data=DATA)
        finally:
            connection.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.monotonic()
    for worker in workers:
        worker.join()
    return threads * per_thread / (time.monotonic() - began)


def test_audit_numbers():
    vendor = connection.vendor
    print()
    for threads in (1, 8, 32):
        rate = appends_per_second(threads, max(2000 // threads, 50))
        print(f"[{vendor}] appends, {threads:>2} threads with their own connection: {rate:,.0f}/s")

    missing = EVENTS - AuditEvent.objects.count()
    if missing > 0:
        appends_per_second(8, missing // 8 + 1)
    count = AuditEvent.objects.count()

    began = time.monotonic()
    sealed = seal_pending()
    seal = time.monotonic() - began
    print(f"[{vendor}] seal_pending: {sealed:,} events in {seal:.2f} s ({sealed / max(seal, 1e-9):,.0f} events/s)")

    began = time.monotonic()
    out = StringIO()
    call_command("audit_verify", stdout=out)
    verify = time.monotonic() - began
    assert "chain intact" in out.getvalue()
    print(f"[{vendor}] audit_verify: {count:,} events in {verify:.2f} s ({count / verify:,.0f} events/s)")

    began = time.monotonic()
    call_command("audit_export", since="2000-01-01", format="jsonl", stdout=StringIO())
    export = time.monotonic() - began
    print(f"[{vendor}] audit_export jsonl: {count:,} events in {export:.2f} s ({count / export:,.0f} events/s)")
