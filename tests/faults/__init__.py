"""The fault-injection suite ("Nothing lost, nobody in"): real processes, real faults.

Each scenario starts its own processes on a private Redis (tests/faults/stack.py), drives them
through the API and the inbox websocket the way clients do (clients.py), injects its fault, and
ends with the harness's check (harness.py, invariants.py). Choices are seeded: the seed is printed
per scenario and in the summary line; ``FAULTS_SEED=N`` repeats them. ``-m "not faults"`` leaves
the suite out.

    DEBUG=1 COUNTERSIGN_VAR_DIR=$PWD/var/test .venv/bin/python -m pytest tests/faults -q

The logs of every process (one file per start) are kept under ``$COUNTERSIGN_VAR_DIR/faults/``,
with the last summary line in ``summary.txt``.
"""
