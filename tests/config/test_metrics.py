"""/metrics after a scripted scenario equals what the database holds, family by family."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agents import runtime
from agents.models import (
    TERMINAL_RUN_STATUSES,
    Agent,
    GuardrailHitRecord,
    Run,
    RunStatus,
    Step,
    ToolCall,
    ToolCallStatus,
)
from agents.tools import arguments_hash, registry
from approvals.decisions import approval_request_decide, approval_request_escalate, approval_request_expire
from approvals.models import ApprovalRequest, ApprovalStatus
from audit.models import AuditEvent
from config import metrics, websocket_count
from tests.agents.fake_llm import FakeLLM, tool_call
from tests.conftest import grant_tools

pytestmark = pytest.mark.django_db

HOSTILE_SLUG = 'llm"} evil{x="1\\\nnext'
HOSTILE_TOOL = 'bad"tool\\\n} x'


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        assert family.name not in families, f"{family.name} exposed twice"
        families[family.name] = family.samples
    return families


def samples(families, family: str, sample: str | None = None, *labels: str) -> dict[tuple[str, ...], float]:
    """The family's samples named ``sample`` (the family's name by default), by the given labels."""
    name = sample or family
    return {tuple(s.labels[label] for label in labels): s.value for s in families.get(family, []) if s.name == name}


def refund_input(amount, reason="kettle arrived broken"):
    from agents.models import Ticket

    return {
        "ticket_id": Ticket.objects.first().pk,
        "customer_email": "jane@example.com",
        "amount": amount,
        "currency": "USD",
        "reason": reason,
    }


def advance(run: Run) -> Run:
    runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def pending(run: Run, tool: str) -> ApprovalRequest:
    return ApprovalRequest.objects.get(run=run, tool=tool, status=ApprovalStatus.PENDING)


def backdate(approval: ApprovalRequest, seconds: int) -> None:
    ApprovalRequest.objects.filter(pk=approval.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


@pytest.fixture
def scenario(support_agent, starter, assigned_reviewer, settings, monkeypatch):
    """Runs that end in every way, approvals decided in every way, a failed and a blocked call,
    guardrail hits, and model tokens priced from the shipped table."""
    settings.TOOL_MAX_ATTEMPTS = 1
    reviewer = assigned_reviewer

    # 1. Approved, edited, approved: succeeds. Its refund waited 40 s for the reviewer.
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input(120)))
    backdate(pending(run, "issue_refund"), 40)
    approval_request_decide(approval=pending(run, "issue_refund"), reviewer=reviewer, verdict="approve")
    run = advance(run)
    email = pending(run, "send_email")
    approval_request_decide(
        approval=email, reviewer=reviewer, verdict="edit", arguments={**email.arguments, "subject": "Refund issued"}
    )
    run = advance(run)
    backdate(pending(run, "update_ticket"), 4000)
    approval_request_decide(approval=pending(run, "update_ticket"), reviewer=reviewer, verdict="approve")
    assert advance(run).status == RunStatus.SUCCEEDED

    # 2. A refund over the hard cap is blocked (and outside the guardrail's bounds, and its reason
    # is flagged); the ticket update is rejected; on_reject=replan, so the run still succeeds.
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input(20000, "lawsuit")))
    assert ToolCall.objects.get(run=run, tool="issue_refund").status == ToolCallStatus.BLOCKED
    approval_request_decide(
        approval=pending(run, "update_ticket"), reviewer=reviewer, verdict="reject", comment="not now"
    )
    assert advance(run).status == RunStatus.SUCCEEDED

    # 3. The refund expires; the ticket update is escalated and still waits.
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input(80)))
    refund = pending(run, "issue_refund")
    assert approval_request_expire(approval_id=refund.pk, now=refund.deadline + timedelta(seconds=1)) == 1
    run = advance(run)
    ticket = pending(run, "update_ticket")
    assert approval_request_escalate(approval_id=ticket.pk, now=ticket.escalate_at + timedelta(seconds=1)) == 1
    assert run.status == RunStatus.WAITING

    # 4. The knowledge base fails; the refund waits, and the run is cancelled.
    def broken(arguments, context):
        raise ConnectionError("knowledge base down")

    monkeypatch.setitem(registry, "kb_search", dataclasses.replace(registry["kb_search"], func=broken))
    run = advance(runtime.run_create(agent=support_agent, user=starter, payload=refund_input(60)))
    assert ToolCall.objects.get(run=run, tool="kb_search").status == ToolCallStatus.FAILED
    runtime.run_cancel(run=run, user=starter, reason="changed my mind")
    monkeypatch.undo()

    # 5. A model-driven agent with a hostile slug, priced from the shipped table.
    settings.LLM_MODEL = "gpt-4o-mini"
    settings.LLM_MAX_RETRIES = 0
    llm = Agent.objects.create(
        slug=HOSTILE_SLUG,
        name="LLM",
        objective="Answer",
        scope="read only",
        tools=["kb_search"],
        autonomy_level=4,
        reasoner="openai",
    )
    grant_tools(starter, ["kb_search"])
    with FakeLLM([tool_call("kb_search", {"query": "refund policy"}), {"content": "30 days."}]) as fake:
        settings.LLM_BASE_URL = fake.url
        run = advance(runtime.run_create(agent=llm, user=starter, payload={"question": "refunds?"}))
    assert run.status == RunStatus.SUCCEEDED, run.error
    # A call of a tool with a hostile name that failed after a second's work.
    arguments = {"x": 1}
    ToolCall.objects.create(
        run=run,
        step=99,
        tool=HOSTILE_TOOL,
        arguments=arguments,
        arguments_hash=arguments_hash(arguments),
        status=ToolCallStatus.FAILED,
        attempts=1,
        latency_ms=1234,
    )
    return {"support": support_agent, "llm": llm}


def test_metrics_equal_counts_from_the_database(client, scenario, django_assert_max_num_queries):
    with django_assert_max_num_queries(11):
        families = scrape(client)

    runs = Counter((run.agent.slug, run.status) for run in Run.objects.all() if run.status in TERMINAL_RUN_STATUSES)
    assert samples(families, "countersign_runs", "countersign_runs_total", "agent", "outcome") == runs
    assert runs == {
        ("support", "succeeded"): 2,
        ("support", "cancelled"): 1,
        (HOSTILE_SLUG, "succeeded"): 1,
    }
    assert samples(families, "countersign_runs_active", None, "agent", "status") == {("support", "waiting"): 1}

    calls = Counter(
        (call.run.agent.slug, call.tool, call.status)
        for call in ToolCall.objects.all()
        if call.status not in (ToolCallStatus.AWAITING, ToolCallStatus.APPROVED, ToolCallStatus.PROPOSED)
    )
    tool_calls = samples(families, "countersign_tool_calls", "countersign_tool_calls_total", "agent", "tool", "status")
    assert tool_calls == calls
    failures = {key: n for key, n in tool_calls.items() if key[2] == "failed"}
    assert failures == {("support", "kb_search", "failed"): 1, (HOSTILE_SLUG, HOSTILE_TOOL, "failed"): 1}
    blocked = Counter((c.run.agent.slug, c.tool) for c in ToolCall.objects.filter(status=ToolCallStatus.BLOCKED))
    assert samples(families, "countersign_policy_blocks", "countersign_policy_blocks_total", "agent", "tool") == blocked
    assert blocked == {("support", "issue_refund"): 1}

    expected = Counter()
    for approval in ApprovalRequest.objects.all():
        key = (approval.agent.slug, approval.tool)
        expected[(*key, "created")] += 1
        if approval.escalated_at:
            expected[(*key, "escalated")] += 1
        if approval.status == ApprovalStatus.APPROVED:
            edited = approval.decisions.filter(verdict="edit").exists()
            expected[(*key, "edited" if edited else "approved")] += 1
        elif approval.status != ApprovalStatus.PENDING:
            expected[(*key, approval.status)] += 1
    outcomes = samples(families, "countersign_approvals", "countersign_approvals_total", "agent", "tool", "outcome")
    assert outcomes == expected
    expected_outcomes = {"approved": 2, "edited": 1, "rejected": 1, "expired": 1, "escalated": 1, "cancelled": 1}
    for outcome, count in expected_outcomes.items():
        assert sum(n for key, n in outcomes.items() if key[2] == outcome) == count, outcome
    assert sum(n for key, n in outcomes.items() if key[2] == "created") == ApprovalRequest.objects.count() == 7
    assert samples(families, "countersign_approvals_pending", None, "agent") == {("support",): 1, (HOSTILE_SLUG,): 0}
    oldest = ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING).earliest("created_at").created_at
    age = samples(families, "countersign_oldest_pending_approval_seconds", None)[()]
    assert 0 < age <= (timezone.now() - oldest).total_seconds()

    steps = Step.objects.filter(kind=Step.Kind.REASONING).exclude(model="")
    assert {step.model for step in steps} == {"gpt-4o-mini"} and steps.count() == 2
    tokens = samples(
        families, "countersign_model_tokens", "countersign_model_tokens_total", "agent", "model", "direction"
    )
    assert tokens == {
        (HOSTILE_SLUG, "gpt-4o-mini", "prompt"): sum(step.prompt_tokens for step in steps),
        (HOSTILE_SLUG, "gpt-4o-mini", "completion"): sum(step.completion_tokens for step in steps),
    }
    assert set(tokens.values()) == {200, 40}
    cost = sum(step.cost for step in steps)
    # (100 * 0.00015 + 20 * 0.0006) / 1000 per step: the shipped price of gpt-4o-mini
    assert cost == Decimal("0.000054") == Run.objects.get(agent=scenario["llm"]).cost
    assert samples(families, "countersign_model_cost_usd", "countersign_model_cost_usd_total", "agent", "model") == {
        (HOSTILE_SLUG, "gpt-4o-mini"): float(cost)
    }

    hits = Counter((hit.run.agent.slug, hit.name) for hit in GuardrailHitRecord.objects.all())
    assert samples(families, "countersign_guardrail_hits", "countersign_guardrail_hits_total", "agent", "check") == hits
    # The audit log, written apart from the metrics' table, tells the same.
    audited = Counter(
        ("support", hit["name"])
        for event in AuditEvent.objects.filter(action="agents.guardrail.hit")
        for hit in event.data["hits"]
    )
    assert hits == audited == {("support", "numeric_bound"): 1, ("support", "safety"): 1}


def assert_histogram(families, name: str, labels: tuple[str, ...], expected: dict[tuple[str, ...], list[float]]):
    """Per label set: _count and _sum equal the stored durations, each bucket counts those at or below it."""
    counts = samples(families, name, f"{name}_count", *labels)
    sums = samples(families, name, f"{name}_sum", *labels)
    assert counts == {key: len(values) for key, values in expected.items()}
    assert sums.keys() == expected.keys()
    for key, values in expected.items():
        assert sums[key] == pytest.approx(sum(values), rel=1e-9, abs=1e-6)
    buckets = [s for s in families[name] if s.name == f"{name}_bucket"]
    for key, values in expected.items():
        mine = [s for s in buckets if tuple(s.labels[label] for label in labels) == key]
        assert mine[-1].labels["le"] == "+Inf" and mine[-1].value == len(values)
        for sample in mine[:-1]:
            bound = float(sample.labels["le"])
            assert sample.value == sum(1 for value in values if value <= bound + 1e-9), (key, bound)


def test_histograms_match_the_stored_durations(client, scenario):
    families = scrape(client)

    runs: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for run in Run.objects.filter(status__in=TERMINAL_RUN_STATUSES):
        runs[(run.agent.slug,)].append((run.finished_at - run.created_at).total_seconds())
    assert_histogram(families, "countersign_run_duration_seconds", ("agent",), runs)

    steps: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for step in Step.objects.select_related("run__agent"):
        steps[(step.run.agent.slug, step.kind)].append(step.latency_ms / 1000)
    assert_histogram(families, "countersign_step_duration_seconds", ("agent", "kind"), steps)
    assert {kind for _, kind in steps} == set(Step.Kind.values)

    calls: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for call in ToolCall.objects.filter(attempts__gt=0).exclude(status=ToolCallStatus.EXECUTING):
        calls[(call.tool,)].append(call.latency_ms / 1000)
    assert_histogram(families, "countersign_tool_call_duration_seconds", ("tool",), calls)
    assert calls[(HOSTILE_TOOL,)] == [1.234]

    decisions: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for approval in ApprovalRequest.objects.filter(decided_by__isnull=False):
        decisions[(approval.agent.slug, approval.risk_class)].append(
            (approval.decided_at - approval.created_at).total_seconds()
        )
    assert_histogram(families, "countersign_time_to_decision_seconds", ("agent", "risk"), decisions)
    # Decided by a person: the two approved, the edit, the rejection; not the expiry.
    assert sum(len(values) for values in decisions.values()) == 4
    assert max(max(values) for values in decisions.values()) >= 4000


def test_an_empty_database_scrapes_with_every_family_named(client, db):
    text = client.get("/metrics").content.decode()
    for name in [
        "countersign_runs_total",
        "countersign_run_duration_seconds",
        "countersign_step_duration_seconds",
        "countersign_tool_calls_total",
        "countersign_tool_call_duration_seconds",
        "countersign_model_tokens_total",
        "countersign_model_cost_usd_total",
        "countersign_approvals_total",
        "countersign_time_to_decision_seconds",
        "countersign_approvals_pending",
        "countersign_oldest_pending_approval_seconds",
        "countersign_guardrail_hits_total",
        "countersign_policy_blocks_total",
        "countersign_websocket_connections",
    ]:
        assert f"# TYPE {name} " in text, name
    families = scrape(client)
    assert samples(families, "countersign_oldest_pending_approval_seconds", None)[()] == 0


# --- Websocket connections, over processes ------------------------------------------------------


@pytest.fixture
def websocket_key(monkeypatch, request):
    """A key of this test's own, so that sockets of other tests and processes do not count."""
    key = f"countersign:test:websockets:{request.node.name}"
    monkeypatch.setattr(websocket_count, "KEY", key)
    monkeypatch.setattr(websocket_count, "_open", set())
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(key)
    yield client, key
    client.delete(key)
    client.close()


def test_websocket_connections_add_up_over_live_processes_only(client, db, websocket_key):
    redis_client, key = websocket_key
    now = int(redis_client.time()[0])
    # Another live process with 3 sockets; one that died with 5, last heard of long ago.
    redis_client.hset(key, "other-host:41:aa", f"3:{now}")
    redis_client.hset(key, "dead-host:42:bb", f"5:{now - websocket_count.STALE_AFTER_SECONDS - 5}")

    async def open_two() -> None:
        await websocket_count.websocket_opened("inbox.one")
        await websocket_count.websocket_opened("inbox.two")
        await websocket_count.websocket_closed("inbox.never-counted")

    async_to_sync(open_two)()
    assert samples(scrape(client), "countersign_websocket_connections", None)[()] == 5
    # The dead process's field is gone; ours says 2.
    assert set(redis_client.hkeys(key)) == {b"other-host:41:aa", websocket_count.PROCESS.encode()}
    assert redis_client.hget(key, websocket_count.PROCESS).split(b":")[0] == b"2"

    async_to_sync(websocket_count.websocket_closed)("inbox.one")
    assert metrics_value(client) == 4


def metrics_value(client) -> float:
    return samples(scrape(client), "countersign_websocket_connections", None)[()]


def test_a_redis_that_does_not_answer_leaves_only_the_websocket_gauge_out(client, db, monkeypatch):
    def down(**kwargs) -> int:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(metrics, "websocket_connections", down)
    families = scrape(client)
    assert "countersign_websocket_connections" not in families
    assert "countersign_runs" in families


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_the_inbox_consumer_counts_its_sockets(client, websocket_key, reviewer):
    from asgiref.sync import sync_to_async
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from config.routing import websocket_urlpatterns

    async def connect() -> WebsocketCommunicator:
        socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/inbox/")
        socket.scope["user"] = reviewer
        connected, _ = await socket.connect(timeout=5)
        assert connected
        return socket

    async def scenario() -> list[float]:
        seen = []
        first = await connect()
        second = await connect()
        seen.append(await sync_to_async(metrics_value)(client))
        await first.disconnect()
        seen.append(await sync_to_async(metrics_value)(client))
        await second.disconnect()
        seen.append(await sync_to_async(metrics_value)(client))
        return seen

    assert async_to_sync(scenario)() == [2, 1, 0]
