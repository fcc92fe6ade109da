"""A sweeper in a tight loop, in a process of its own: ``python -m tests.faults.sweeper``.

Calls ``agents.tasks.sweep`` (the function beat's task runs) again and again until SIGTERM, so
that two of them, or one and beat, sweep at the same moments; then prints what it did:
``sweeper: totals {"requeued": ..., "expired": ...}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> int:
    import django

    django.setup()
    from django.db import connection

    from agents.tasks import sweep

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    # A pause between rounds keeps two of them from taking both cores of a small machine.
    pause = float(os.environ.get("FAULTS_SWEEP_PAUSE", "0.02"))
    totals: dict[str, int] = {}
    rounds = errors = 0
    while not stopping:
        try:
            for key, value in sweep().items():
                totals[key] = totals.get(key, 0) + value
        except Exception as exc:  # a lock timeout or a restarted database: say so and go on
            errors += 1
            print(f"sweeper: error {type(exc).__name__}: {exc}", flush=True)
            connection.close()
        rounds += 1
        if rounds == 1:
            print("sweeper: swept once", flush=True)
        time.sleep(pause)
    totals["rounds"] = rounds
    totals["errors"] = errors
    print(f"sweeper: totals {json.dumps(totals, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
