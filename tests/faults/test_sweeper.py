"""The sweeper: it recovers a crash between commit and enqueue within its period, and two of them
at once (two beats, two tight sweep loops) do nothing twice.

"A crash between commit and enqueue" is made at the edge, with no hook in the application: an
ASGI server whose REDIS_URL names a port nobody listens on commits every start and decision and
then fails to publish (logged, not raised). Only the sweeper can ring for those.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from agents.models import LedgerEntry, Run, RunStatus, Step, ToolCall
from approvals.models import ApprovalRequest, ApprovalStatus
from audit.models import AuditEvent
from tests.faults.clients import Api, ReviewerBot
from tests.faults.stack import TIMINGS
from tests.faults.world import CUSTOMER, build
from tests.live import free_port, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

SWEEP = float(TIMINGS["SWEEP_INTERVAL_SECONDS"])
REQUEUE_AFTER = float(TIMINGS["RUN_REQUEUE_AFTER_SECONDS"])
# A lost doorbell is rung within the requeue delay plus two sweeper periods (the beat tick, then
# the sweep task's turn on the worker), plus the worker's own pick-up: the bound asserted below.
RECOVERY_BOUND = REQUEUE_AFTER + 2 * SWEEP + 3.0


def dead_broker() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # a port nobody listens on


def test_enqueue_lost_after_commit_is_rung_by_the_sweeper_within_its_period(harness, stack):
    world = build({"agents": [{"kind": "chaos", "slug": "chaos", "refunds": 2}, {"kind": "gated", "slug": "gated"}]})
    lossy = stack.server("asgi-lossy", REDIS_URL=dead_broker())
    worker, beat = stack.worker(), stack.beat()
    for process in (lossy, worker, beat):
        process.start()

    starter = Api(harness.ledger, lossy.url, world["tokens"]["starter"], name="starter")
    gated_input = {"ticket_id": world["ticket"], "customer_email": CUSTOMER, "amount": 30, "currency": "USD"}
    for number in range(8):
        assert starter.start_run(*(("gated", gated_input) if number % 2 else ("chaos", {}))) is not None
    # Every start and decision goes through the server that cannot publish: the commit stands (201,
    # 200), the doorbell is lost, and the sweeper must find the run.
    with ReviewerBot(Api(harness.ledger, lossy.url, world["tokens"]["r01"], name="r01"), harness.rng("r01"), reject=0):
        wait_until(
            lambda: Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 8,
            timeout=120,
            interval=0.1,
            what="the eight runs to succeed through the sweeper alone",
        )
    starter.close()
    harness.check(settle_timeout=30)

    assert "could not enqueue" in lossy.log_text() or "could not enqueue" in lossy.log_path.read_text()
    # The sweeper's ring (it stamps enqueued_at), not the start: a start also waits for a free worker
    # behind the other runs, which is the machine's load, not the sweeper's period. A run whose
    # enqueued_at is after its start was requeued later (a pause): its first ring is not known.
    rings = [
        (run.enqueued_at - run.created_at).total_seconds()
        for run in Run.objects.all()
        if run.started_at and run.enqueued_at and run.enqueued_at <= run.started_at
    ]
    assert len(rings) >= 4, f"too few rings to measure: {rings}"
    slowest_start = max(rings)
    assert slowest_start <= RECOVERY_BOUND, f"a lost start rung after {slowest_start:.1f} s (bound {RECOVERY_BOUND} s)"
    waits = []
    for approval in ApprovalRequest.objects.filter(status=ApprovalStatus.APPROVED):
        applied = (
            Step.objects.filter(run=approval.run, kind="decision", input__call_step=approval.tool_call.step)
            .values_list("created_at", flat=True)
            .first()
        )
        assert applied is not None, f"approval {approval.pk} was never applied"
        waits.append((applied - approval.decided_at).total_seconds())
    assert waits and max(waits) <= RECOVERY_BOUND, f"lost resumes waited up to {max(waits):.1f} s"
    print(
        f"[{harness.name}] lost starts rung within {slowest_start:.1f} s, lost resumes within {max(waits):.1f} s "
        f"(bound {RECOVERY_BOUND:.0f} s)"
    )


def test_two_beats_and_two_sweep_loops_at_once(harness, stack):
    """Everything needs the sweeper: starts whose doorbell was lost, approvals that expire. Two
    beats and two sweep loops race for each; the lease and the conditional moves let one win."""
    world = build(
        {
            "agents": [
                {"kind": "chaos", "slug": "chaos", "refunds": 3},
                {"kind": "expiring", "slug": "expiring", "deadline": 1},
            ]
        }
    )
    lossy = stack.server("asgi-lossy", REDIS_URL=dead_broker())
    worker = stack.worker()
    sweepers = [stack.beat("beat-1"), stack.beat("beat-2"), stack.sweeper("sweep-1"), stack.sweeper("sweep-2")]
    for process in (lossy, worker, *sweepers):
        process.start()

    starter = Api(harness.ledger, lossy.url, world["tokens"]["starter"], name="starter")
    for number in range(16):
        assert starter.start_run(*(("expiring", {"amount": 10 + number}) if number % 2 else ("chaos", {})))
    starter.close()
    wait_until(
        lambda: Run.objects.filter(status__in=[RunStatus.SUCCEEDED, RunStatus.REJECTED]).count() == 16,
        timeout=120,
        interval=0.1,
        what="every run to end",
    )
    for process in sweepers:
        process.stop()  # the loops print their totals on SIGTERM
    harness.check(settle_timeout=30)

    chaos, expiring = Run.objects.filter(agent__slug="chaos"), Run.objects.filter(agent__slug="expiring")
    assert set(chaos.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    assert set(expiring.values_list("status", flat=True)) == {RunStatus.REJECTED}
    assert set(ApprovalRequest.objects.values_list("status", flat=True)) == {ApprovalStatus.EXPIRED}
    assert AuditEvent.objects.filter(action="approvals.request.expired").count() == 8
    assert LedgerEntry.objects.count() == 3 * 8  # the chaos refunds only; an expired refund never runs
    assert not ToolCall.objects.filter(run__in=expiring, status="succeeded").exists()
    totals = [process.totals() for process in sweepers[2:]]
    beats = [process.sweeps_sent() for process in sweepers[:2]]
    print(f"[{harness.name}] sweep loops: {totals}; sweeps sent by the beats: {beats}")
    assert all(t.get("rounds", 0) > 10 for t in totals), totals
    # The loops' own count of expiries: each approval expired once, whoever did it.
    assert sum(t.get("expired", 0) for t in totals) <= 8


def sweep_pickups(beat, worker) -> list[float]:
    """Seconds from each sweep beat sent to a worker taking it, paired in order, from their logs."""

    def times(pattern: str, text: str) -> list[datetime]:
        return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp in re.findall(pattern, text)]

    sent = times(r"\[([\d-]+ [\d:,]+): INFO/MainProcess\] Scheduler: Sending due task sweep", beat.log_text())
    taken = times(
        r"\[([\d-]+ [\d:,]+): INFO/MainProcess\] Task agents\.tasks\.sweep\[[^]]+\] received", worker.log_text()
    )
    return [(took - send).total_seconds() for send, took in zip(sent, taken, strict=False)]


@pytest.mark.timeout(300)
def test_sweeper_keeps_its_period_under_a_burst(harness, stack):
    """A burst of forty runs fills the runs queue; meanwhile a start's doorbell is lost. The
    sweeper must still run every period (it is what rings for lost doorbells, expired leases and
    approvals past their deadline); the lost run is recovered, and nothing runs twice."""
    world = build({"agents": [{"kind": "chaos", "slug": "chaos", "refunds": 6}]})
    live, lossy = stack.server("asgi"), stack.server("asgi-lossy", REDIS_URL=dead_broker())
    worker, beat = stack.worker(), stack.beat()
    for process in (live, lossy, worker, beat):
        process.start()
    starter = Api(harness.ledger, live.url, world["tokens"]["starter"], name="starter")
    lossy_starter = Api(harness.ledger, lossy.url, world["tokens"]["starter"], name="starter")
    burst = [starter.start_run("chaos", {}) for _ in range(40)]
    lost = lossy_starter.start_run("chaos", {})
    wait_until(
        lambda: Run.objects.filter(pk__in=[*burst, lost], status=RunStatus.SUCCEEDED).count() == 41,
        timeout=200,
        interval=0.2,
        what="the burst and the lost run to succeed",
    )
    starter.close()
    lossy_starter.close()
    beat.stop()
    harness.check(settle_timeout=30)

    run = Run.objects.get(pk=lost)
    lost_wait = (run.started_at - run.created_at).total_seconds()
    pickups = sweep_pickups(beat, worker)
    slowest = max(pickups)
    print(
        f"[{harness.name}] sweeps taken {len(pickups)}, slowest {slowest:.1f} s after beat sent it; "
        f"the lost run started {lost_wait:.1f} s after its 201"
    )
    assert slowest <= 2 * SWEEP + 1, (
        f"a sweep waited {slowest:.1f} s for a worker behind a burst of runs (period {SWEEP:.0f} s); "
        f"the lost run started after {lost_wait:.1f} s"
    )
