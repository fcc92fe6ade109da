"""Run traces: one trace per run across its tasks, GenAI span names and attributes, masked content,
pseudonymous reviewers, OTLP/HTTP export to a receiver, and nothing at all when not configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.urls import reverse
from guardian.shortcuts import assign_perm
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents import runtime, tracing
from agents.models import Agent, Run, RunStatus, ToolCall
from approvals.decisions import approval_request_decide
from approvals.models import ApprovalRequest
from config import telemetry
from tests.agents.fake_llm import FakeLLM, tool_call
from tests.agents.otlp_receiver import Receiver, attribute_values
from tests.conftest import grant_tools
from tests.pages import client_for, waiting_refund

# The database is committed (on_commit sends the spans); run doorbells stay off the broker.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbells")]

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
PII = (EMAIL, CARD, CARD.replace(" ", ""), "jane.doe")
MODEL = "gpt-4o-mini"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED")


@pytest.fixture(autouse=True)
def no_provider(monkeypatch) -> Iterator[None]:
    """Each test starts without a provider and without the variables, and leaves none behind."""
    for name in (*ENDPOINT_VARIABLES, "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    telemetry.tracing_shutdown()
    yield
    telemetry.tracing_shutdown()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    telemetry.tracing_install(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def refund_desk(settings, operator, reviewer) -> Agent:
    """An agent on a model (the local fake): issuing a refund waits for a person at level 2."""
    settings.LLM_MODEL = MODEL
    settings.LLM_MAX_RETRIES = 0
    agent = Agent.objects.create(
        slug="refund-desk",
        name="Refund desk",
        objective="Refund customers",
        scope="refunds only",
        tools=["issue_refund"],
        autonomy_level=2,
        reasoner="openai",
    )
    grant_tools(operator, ["issue_refund"])
    assign_perm("review_agent", reviewer, agent)
    return agent


def refunded_run(agent: Agent, *, starter, reviewer, settings) -> Run:
    """Reason, wait for the refund's approval, approve it, execute it, answer: three worker tasks."""
    # The model sees placeholders; the refund's arguments get the card and the address back.
    refund = {"amount": 120, "currency": "USD", "reason": "card <CARD_1> of <EMAIL_1>"}
    with FakeLLM([tool_call("issue_refund", refund), {"content": "Refunded 120 USD."}]) as fake:
        settings.LLM_BASE_URL = fake.url
        run = runtime.run_create(agent=agent, user=starter, payload={"customer_email": EMAIL, "card": CARD})
        runtime.run_advance(run_id=run.pk)
        approval = ApprovalRequest.objects.get(run=run)
        approval_request_decide(approval=approval, reviewer=reviewer, verdict="approve")
        runtime.run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    # The content is there to leak: the executed arguments hold both.
    executed = json.dumps(ToolCall.objects.get(run=run).arguments)
    assert CARD in executed and EMAIL in executed
    return run


def by_name(finished: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        named.setdefault(span.name, []).append(span)
    return named


def ns(moment) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def test_a_run_is_one_trace_rooted_at_invoke_agent_with_its_steps_calls_and_waits(
    spans, refund_desk, operator, reviewer, settings
):
    run = refunded_run(refund_desk, starter=operator, reviewer=reviewer, settings=settings)
    finished = list(spans.get_finished_spans())
    named = by_name(finished)
    assert sorted(named) == [
        "await_decision issue_refund",
        f"chat {MODEL}",
        "execute_tool issue_refund",
        "invoke_agent Refund desk",
    ]
    (root,) = named["invoke_agent Refund desk"]
    assert {span.context.trace_id for span in finished} == {int(tracing.run_trace_id(run), 16)}
    assert root.parent is None
    assert all(span.parent.span_id == root.context.span_id for span in finished if span is not root)
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.id"] == "refund-desk"
    assert root.attributes["countersign.run.status"] == "succeeded"
    assert (root.start_time, root.end_time) == (ns(run.started_at), ns(run.finished_at))
    assert root.resource.attributes["service.name"] == "countersign"

    first, last = named[f"chat {MODEL}"]
    for chat in (first, last):
        assert chat.attributes["gen_ai.request.model"] == chat.attributes["gen_ai.response.model"] == MODEL
        assert chat.attributes["gen_ai.usage.input_tokens"] == 100
        assert chat.attributes["gen_ai.usage.output_tokens"] == 20
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert last.attributes["gen_ai.response.finish_reasons"] == ("stop",)

    (tool,) = named["execute_tool issue_refund"]
    assert tool.attributes["gen_ai.tool.name"] == "issue_refund"
    # The model's own id for the call (the fake server names it call_x), as the reasoner sends it back.
    assert tool.attributes["gen_ai.tool.call.id"] == "call_x"
    assert tool.attributes["countersign.policy.verdict"] == "require_approval"
    assert "level 2" in tool.attributes["countersign.policy.reason"]
    assert tool.attributes["countersign.tool_call.status"] == "succeeded"

    approval = ApprovalRequest.objects.get(run=run)
    (wait,) = named["await_decision issue_refund"]
    assert wait.attributes["gen_ai.tool.call.id"] == "call_x"
    assert wait.attributes["countersign.approval.verdict"] == "approved"
    assert wait.attributes["countersign.approval.decisions"] == ("approve",)
    assert (wait.start_time, wait.end_time) == (ns(approval.created_at), ns(approval.decided_at))
    pseudonym = wait.attributes["countersign.reviewer.id"]
    assert pseudonym == tracing.reviewer_pseudonym(reviewer) != tracing.reviewer_pseudonym(operator)
    assert len(pseudonym) == 32

    values = [str(value) for span in finished for value in span.attributes.values()]
    people = (reviewer.get_username(), reviewer.email, operator.get_username(), operator.email)
    assert not [value for value in values if any(secret in value for secret in (*PII, *people))]


def test_a_rejection_ends_the_call_and_the_wait_with_the_reviewers_verdict(
    spans, support_agent, starter, assigned_reviewer
):
    approval = waiting_refund(support_agent, starter)
    assert not by_name(list(spans.get_finished_spans())).get("await_decision issue_refund")
    approval_request_decide(approval=approval, reviewer=assigned_reviewer, verdict="reject", comment="not ours")
    runtime.run_advance(run_id=approval.run_id)

    named = by_name(list(spans.get_finished_spans()))
    (wait,) = named["await_decision issue_refund"]
    assert wait.attributes["countersign.approval.verdict"] == "rejected"
    assert wait.attributes["countersign.reviewer.id"] == tracing.reviewer_pseudonym(assigned_reviewer)
    (tool,) = named["execute_tool issue_refund"]
    assert tool.attributes["countersign.tool_call.status"] == "rejected"
    # The scripted reasoner asks no model: its steps are plain "chat" spans, stopped at a tool call.
    assert named["chat"][0].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert "gen_ai.request.model" not in named["chat"][0].attributes


def test_the_trace_page_names_the_run_trace_id_when_traces_are_exported(spans, support_agent, starter):
    run = waiting_refund(support_agent, starter).run
    page = client_for(starter).get(reverse("run-trace", args=[run.pk]))
    assert f'<code id="run-trace-id">{tracing.run_trace_id(run)}</code>' in page.content.decode()


def test_spans_reach_a_collector_over_otlp_http_when_the_endpoint_is_set(
    monkeypatch, refund_desk, operator, reviewer, settings
):
    with Receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "countersign-staging")
        provider = telemetry.tracing_setup()
        assert provider is not None
        run = refunded_run(refund_desk, starter=operator, reviewer=reviewer, settings=settings)
        assert provider.force_flush(timeout_millis=10_000)

    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    resources = [rs for request in receiver.requests for rs in request.resource_spans]
    services = {attribute_values(rs.resource.attributes)["service.name"] for rs in resources}
    assert services == {"countersign-staging"}
    exported = [span for rs in resources for scope in rs.scope_spans for span in scope.spans]
    names = sorted(span.name for span in exported)
    assert names == sorted(
        [f"chat {MODEL}"] * 2 + ["await_decision issue_refund", "execute_tool issue_refund", "invoke_agent Refund desk"]
    )
    assert {span.trace_id.hex() for span in exported} == {tracing.run_trace_id(run)}
    (root,) = [span for span in exported if span.name.startswith("invoke_agent")]
    assert root.parent_span_id == b""
    assert {span.parent_span_id for span in exported if span is not root} == {root.span_id}
    attributes = {span.name: attribute_values(span.attributes) for span in exported}
    assert attributes["execute_tool issue_refund"]["gen_ai.tool.name"] == "issue_refund"
    assert attributes["await_decision issue_refund"]["countersign.reviewer.id"] == tracing.reviewer_pseudonym(reviewer)
    assert attributes[f"chat {MODEL}"]["gen_ai.usage.input_tokens"] == 100
    wire = b"".join(request.SerializeToString() for request in receiver.requests)
    assert not [secret for secret in PII if secret.encode() in wire]


def _setup_in_a_fresh_process(env: dict[str, str]) -> dict[str, bool]:
    code = (
        "import json, sys, django; django.setup(); from config import telemetry; "
        "provider = telemetry.tracing_setup(); "
        "print(json.dumps({'provider': provider is not None, "
        "'exporter': 'opentelemetry.exporter.otlp.proto.http.trace_exporter' in sys.modules}))"
    )
    base = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARIABLES}
    done = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_an_endpoint_there_is_no_provider_no_exporter_and_no_span(support_agent, starter):
    assert _setup_in_a_fresh_process({}) == {"provider": False, "exporter": False}
    assert _setup_in_a_fresh_process({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}) == {
        "provider": True,
        "exporter": True,
    }
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}
    assert _setup_in_a_fresh_process(disabled) == {"provider": False, "exporter": False}

    assert telemetry.tracing_setup() is None
    run = waiting_refund(support_agent, starter).run
    assert telemetry.tracer() is None and not tracing.tracing_enabled()
    page = client_for(starter).get(reverse("run-trace", args=[run.pk]))
    assert "run-trace-id" not in page.content.decode()


def test_a_worker_process_sets_up_at_its_start_and_flushes_at_its_end(monkeypatch):
    from celery import signals

    from config.celery import app

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    signals.worker_process_init.send(sender=None)
    provider = telemetry.tracing_setup()  # what the signal made, or None
    assert provider is not None
    signals.worker_process_init.send(sender=None)  # once per process: the same provider
    assert telemetry.tracing_setup() is provider
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    assert telemetry.tracer() is None

    # A pool without child processes (solo, threads) sets up in the worker itself.
    solo = app.WorkController(app=app, pool_cls="solo", hostname="tracing-check@localhost")
    assert telemetry.tracer() is not None
    signals.worker_shutdown.send(sender=solo)
    assert telemetry.tracer() is None
    app.WorkController(app=app, pool_cls="prefork", concurrency=1, hostname="tracing-check@localhost")
    assert telemetry.tracer() is None  # its children set up after the fork
