"""Run traces from the real processes: a Celery worker and the ASGI server, each set up from the
OTEL_* variables, export one run's spans over OTLP/HTTP to a collector, and they make one trace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from rest_framework.authtoken.models import Token

from agents import tracing
from agents.models import Run, RunStatus, Ticket
from approvals.models import ApprovalRequest, ApprovalStatus
from tests.agents.otlp_receiver import Receiver
from tests.live import AsgiServer, CeleryWorker, wait_until

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60.0


@pytest.fixture
def traced(_live_worker: CeleryWorker) -> Iterator[tuple[Receiver, AsgiServer]]:
    """A worker and a server exporting to a local collector; the suite's worker (started without
    the variables) is stopped meanwhile so that it takes none of these runs' tasks."""
    _live_worker.wait_idle()
    _live_worker.stop()
    with Receiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "countersign-live",
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds: the batch leaves soon after each span
        }
        worker = CeleryWorker()
        worker.extra_env = env
        worker.log_path = worker.log_path.with_name("live-worker-traced.log")
        server = AsgiServer(env=env)
        worker.start()
        try:
            server.start()
            yield receiver, server
        finally:
            worker.wait_idle()
            worker.stop()
            server.stop()


def api(server: AsgiServer, user: Any) -> httpx.Client:
    token = Token.objects.create(user=user).key
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Token {token}"}, timeout=20)


def pending(run_id: int) -> ApprovalRequest | None:
    return ApprovalRequest.objects.filter(run_id=run_id, status=ApprovalStatus.PENDING).first()


def start(client: httpx.Client) -> int:
    payload = {"ticket_id": Ticket.objects.get().pk, "customer_email": "jane@example.com", "amount": 120}
    response = client.post("/api/v1/agents/support/runs/", json={"input": {**payload, "currency": "USD"}})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def trace_of(receiver: Receiver, run: Run) -> list[tuple[dict[str, Any], Any]]:
    return [(resource, span) for resource, span in receiver.spans() if span.trace_id.hex() == tracing.run_trace_id(run)]


def root_of(receiver: Receiver, run: Run) -> Any:
    return next((span for _, span in trace_of(receiver, run) if span.name.startswith("invoke_agent")), None)


def test_a_run_driven_by_the_worker_and_the_server_is_one_trace_at_the_collector(
    traced, support_agent, starter, assigned_reviewer
):
    receiver, server = traced
    operator, reviewer = api(server, starter), api(server, assigned_reviewer)

    run_id = start(operator)
    decided = 0
    while not Run.objects.get(pk=run_id).is_terminal:
        approval = wait_until(
            lambda: pending(run_id) or Run.objects.get(pk=run_id).is_terminal, timeout=TIMEOUT, what="the next step"
        )
        if isinstance(approval, ApprovalRequest):
            response = reviewer.post(f"/api/v1/approvals/{approval.pk}/decision/", json={"verdict": "approve"})
            assert response.status_code == 200, response.text
            decided += 1
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert decided >= 1

    # The worker's spans: every step, call and wait, under the root emitted at the end.
    root = wait_until(lambda: root_of(receiver, run), timeout=TIMEOUT, what="the run's root span")
    spans = wait_until(
        lambda: len(trace_of(receiver, run)) >= 1 + decided * 2 and trace_of(receiver, run),
        timeout=TIMEOUT,
        what="the run's waits and calls",
    )
    names = [span.name for _, span in spans]
    assert names.count("await_decision issue_refund") == 1
    assert names.count("execute_tool issue_refund") == 1
    assert sum(name.startswith("await_decision") for name in names) == decided
    assert {span.parent_span_id for _, span in spans if span is not root} == {root.span_id}
    assert {resource["service.name"] for resource, _ in spans} == {"countersign-live"}

    # A waiting run cancelled over the API ends in the server's process: its root comes from there.
    waiting = start(operator)
    wait_until(lambda: pending(waiting), timeout=TIMEOUT, what="the second run to wait")
    assert operator.post(f"/api/v1/runs/{waiting}/cancel/", json={"reason": "duplicate"}).status_code == 200
    cancelled = Run.objects.get(pk=waiting)
    assert cancelled.status == RunStatus.CANCELLED
    cancelled_root = wait_until(lambda: root_of(receiver, cancelled), timeout=TIMEOUT, what="the cancelled root")
    attributes = {item.key: item.value.string_value for item in cancelled_root.attributes}
    assert attributes["countersign.run.status"] == "cancelled"
