"""Scale-out: two ASGI servers, two workers. A reviewer's websocket on server A hears each
checkpoint a worker reached; the reviewer decides through server B (session and CSRF, as the inbox
page does); the run resumes on whichever worker takes it, also when one of them is killed midway
(beat's sweeper hands that worker's runs on once their lease ends).
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from agents.models import Run, RunStatus
from approvals.models import ApprovalRequest
from tests.faults.clients import Api, InboxClient, LoopThread, csrf_post, sign_in
from tests.faults.world import CUSTOMER, build
from tests.live import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

RUNS = 6


def tasks_run(log: str) -> int:
    return len(re.findall(r"Task agents\.tasks\.(?:advance|resume)_run\[[^]]+\] succeeded", log))


@pytest.mark.timeout(300)
def test_reviewer_on_server_a_decides_through_server_b(harness, stack):
    world = build({"agents": [{"kind": "gated", "slug": "gated"}], "reviewers": 1})
    server_a, server_b = stack.server("asgi-a"), stack.server("asgi-b")
    workers = [stack.worker("worker-a"), stack.worker("worker-b")]
    beat = stack.beat()  # the sweeper: it hands the killed worker's runs on once their lease ends
    for process in (server_a, server_b, *workers, beat):
        process.start()
    browser = sign_in(server_b.url, "r01")
    inbox = InboxClient("r01@A", f"sessionid={browser.cookies['sessionid']}", frozenset(world["may_review"]["r01"]))
    loop = LoopThread()
    stop = threading.Event()
    loop.spawn(inbox.steady(server_a, stop))
    wait_until(lambda: inbox.open_now, timeout=30, what="the reviewer's socket on server A")

    starter = Api(harness.ledger, server_a.url, world["tokens"]["starter"], name="starter")
    gated_input = {"ticket_id": world["ticket"], "customer_email": CUSTOMER, "amount": 35, "currency": "USD"}
    runs = [starter.start_run("gated", gated_input) for _ in range(RUNS)]
    decided: dict[int, float] = {}
    push_after_decision: list[float] = []
    killed = False
    try:
        deadline = time.monotonic() + 180
        while Run.objects.filter(pk__in=runs, status=RunStatus.SUCCEEDED).count() < RUNS:
            assert time.monotonic() < deadline, "the runs did not finish within 180 s"
            heard = [aid for aid in inbox.pending() if aid not in decided]
            if not heard:
                time.sleep(0.01)  # poll the client's state (filled by the socket's own task)
                continue
            for approval_id in heard:
                payload = inbox.payloads[approval_id]
                previous = [
                    decided[a] for a, p in inbox.payloads.items() if p["run"] == payload["run"] and a in decided
                ]
                if previous:
                    push_after_decision.append(inbox.received_at[approval_id] - max(previous))
                response = csrf_post(
                    browser,
                    server_b.url,
                    f"/api/v1/approvals/{approval_id}/decision/",
                    {"verdict": "approve", "arguments_hash": payload["arguments_hash"]},
                )
                harness.ledger.outcome("decide", str(response.status_code))
                assert response.status_code == 200, response.text
                harness.ledger.ack_decision(
                    approval=approval_id, reviewer="r01", verdict="approve", status=response.json()["status"]
                )
                decided[approval_id] = time.monotonic()
            if not killed and len(decided) >= RUNS:
                # Midway: one worker dies with whatever it holds; the other, and its restart, go on.
                workers[0].kill()
                harness.kill("group")
                workers[0].start()
                harness.restart("worker")
                killed = True
    finally:
        stop.set()
        loop.close()
        starter.close()
        browser.close()
    harness.check(settle_timeout=30)

    approvals = set(ApprovalRequest.objects.filter(run__in=runs).values_list("pk", flat=True))
    assert approvals == set(decided), "every checkpoint was heard on server A and decided on server B"
    work = {worker.label: tasks_run(worker.log_text()) for worker in workers}
    push_after_decision.sort()
    print(
        f"[{harness.name}] run tasks per worker: {work}; decision on B -> next checkpoint heard on A: "
        f"median {push_after_decision[len(push_after_decision) // 2]:.2f} s, max {push_after_decision[-1]:.2f} s"
    )
    assert all(work.values()), f"both workers took run tasks: {work}"
