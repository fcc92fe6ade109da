"""Races on one approval: twenty reviewers at once, and a decision against the expiry sweeper.

One conditional UPDATE wins; the others get 409 and change nothing; the run applies the winner's
decision exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from agents.models import TERMINAL_RUN_STATUSES, LedgerEntry, Run, RunStatus
from approvals.events import approval_payload
from approvals.models import ApprovalRequest, ApprovalStatus, Decision
from tests.faults.clients import Api, verdict_for
from tests.faults.world import CUSTOMER, build
from tests.live import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

REVIEWERS = 20


def race(apis: list[Api], approval: dict, rng) -> Counter:
    """Every reviewer decides the same approval at the same moment; the answers' codes."""
    barrier = threading.Barrier(len(apis))
    verdicts = [verdict_for(approval, rng, reject=0.2, edit=0.2) for _ in apis]

    def decide(index: int):
        barrier.wait(timeout=30)
        return apis[index].decide(approval, verdicts[index][0], **verdicts[index][1])

    with ThreadPoolExecutor(max_workers=len(apis)) as pool:
        answers = list(pool.map(decide, range(len(apis))))
    return Counter(code for code, _ in answers)


@pytest.mark.timeout(300)
def test_twenty_reviewers_race_on_each_approval(harness, stack):
    world = build(
        {"agents": [{"kind": "gated", "slug": "gated"}, {"kind": "pair", "slug": "pair"}], "reviewers": REVIEWERS}
    )
    servers = [stack.server("asgi-a"), stack.server("asgi-b")]
    worker, beat = stack.worker(), stack.beat()
    for process in (*servers, worker, beat):
        process.start()
    starter = Api(harness.ledger, servers[0].url, world["tokens"]["starter"], name="starter")
    apis = [
        Api(harness.ledger, servers[n % 2].url, world["tokens"][name], name=name)
        for n, name in enumerate(world["reviewers"])
    ]
    gated_input = {"ticket_id": world["ticket"], "customer_email": CUSTOMER, "amount": 60, "currency": "USD"}
    runs = [starter.start_run("gated", gated_input) for _ in range(4)] + [
        starter.start_run("pair", {}) for _ in range(2)
    ]
    rng = harness.rng("verdicts")
    raced: dict[int, Counter] = {}
    try:
        while True:
            wait_until(
                lambda: (
                    not Run.objects.filter(pk__in=runs, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists()
                    and not ApprovalRequest.objects.filter(run__in=runs, run__status=RunStatus.WAITING)
                    .exclude(status=ApprovalStatus.PENDING)
                    .filter(tool_call__status="awaiting")
                    .exists()
                ),
                timeout=60,
                what="the runs to reach their next checkpoint",
            )
            pending = [a for a in ApprovalRequest.objects.filter(run__in=runs, status=ApprovalStatus.PENDING)]
            if not pending:
                break
            for approval in pending:
                raced[approval.pk] = race(apis, approval_payload(approval), rng)
    finally:
        for api in (starter, *apis):
            api.close()
    assert set(Run.objects.filter(pk__in=runs).values_list("status", flat=True)) <= set(TERMINAL_RUN_STATUSES)
    harness.check(settle_timeout=30)

    for approval in ApprovalRequest.objects.filter(pk__in=raced):
        codes = raced[approval.pk]
        decisions = Decision.objects.filter(request=approval).count()
        assert set(codes) <= {200, 409}, f"approval {approval.pk}: answers {dict(codes)}"
        assert codes[200] == decisions, f"approval {approval.pk}: {codes[200]} answers 200, {decisions} decisions"
        # One reviewer ends a single-approval request. A two-approval request takes a 200 per partial
        # decision until one ends it (an edit starts the count again: earlier approvals were of other
        # arguments); the invariants check that exactly one decision ended it.
        if approval.required_approvals == 1:
            assert codes[200] == 1, f"approval {approval.pk}: {dict(codes)}"
        assert codes[200] >= 1, f"approval {approval.pk}: {dict(codes)}"
        assert approval.status != ApprovalStatus.PENDING
    print(f"[{harness.name}] {len(raced)} races of {REVIEWERS}: {[dict(c) for c in raced.values()]}")
    assert len(raced) >= 10
    assert any(a.required_approvals == 2 for a in ApprovalRequest.objects.filter(pk__in=raced))


@pytest.mark.timeout(300)
def test_decisions_race_the_expiry_sweeper(harness, stack):
    """Each approval is decided within a few hundred milliseconds of its deadline, while two
    sweep loops and beat expire what is due: exactly one of the two wins, and the run does that."""
    world = build({"agents": [{"kind": "expiring", "slug": "expiring", "deadline": 2}], "reviewers": 1})
    server, worker = stack.server(), stack.worker()
    sweepers = [stack.beat(), stack.sweeper("sweep-1", FAULTS_SWEEP_PAUSE="0.005"), stack.sweeper("sweep-2")]
    for process in (server, worker, *sweepers):
        process.start()
    starter = Api(harness.ledger, server.url, world["tokens"]["starter"], name="starter")
    reviewer = Api(harness.ledger, server.url, world["tokens"]["r01"], name="r01")
    rng = harness.rng("offsets")
    results: dict[int, int | str] = {}

    def decide_at_deadline(approval: ApprovalRequest, offset: float) -> None:
        moment = approval.deadline.timestamp() + offset
        time.sleep(max(0.0, moment - time.time()))  # the chosen moment around the deadline
        results[approval.pk] = reviewer.decide(approval_payload(approval), "approve")[0]

    threads = []
    try:
        for number in range(14):
            run_id = starter.start_run("expiring", {"amount": 5 + number})
            approval = wait_until(
                lambda: ApprovalRequest.objects.select_related("agent", "run").filter(run_id=run_id).first(),
                timeout=30,
                what="the approval",
            )
            thread = threading.Thread(target=decide_at_deadline, args=(approval, rng.uniform(-0.3, 0.3)))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout=60)
        wait_until(
            lambda: not Run.objects.exclude(status__in=TERMINAL_RUN_STATUSES).exists(),
            timeout=60,
            what="every run to end",
        )
    finally:
        starter.close()
        reviewer.close()
    harness.check(settle_timeout=30)

    outcomes = Counter()
    for approval in ApprovalRequest.objects.select_related("run", "tool_call"):
        code = results[approval.pk]
        refunded = LedgerEntry.objects.filter(idempotency_key=str(approval.tool_call.idempotency_key)).exists()
        if code == 200:
            assert approval.status == ApprovalStatus.APPROVED and refunded and approval.run.status == "succeeded"
            outcomes["decided"] += 1
        else:
            assert code == 409, f"approval {approval.pk}: {code}"
            assert approval.status == ApprovalStatus.EXPIRED and not refunded and approval.run.status == "rejected"
            assert not Decision.objects.filter(request=approval).exists()
            outcomes["expired"] += 1
    print(f"[{harness.name}] decision against expiry: {dict(outcomes)}")
