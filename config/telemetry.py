"""This process's OpenTelemetry tracer provider: spans over OTLP/HTTP (protobuf), or none at all.

Set up once per process (``tracing_setup``: the ASGI server, each Celery worker process) when
the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
and ``OTEL_SDK_DISABLED`` is not "true". Without them no provider exists, and ``tracer()``
answers None, so the runtime's hooks return at once.

A run's spans come from many tasks and processes, so their ids are derived from the run
(``agents.tracing``) and pinned here for the one span being started (``pinned_ids``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_SERVICE_NAME = "countersign"
INSTRUMENTATION_NAME = "countersign.runs"

# (trace id, span id) for the span being started now; None: random ids.
_PINNED: ContextVar[tuple[int, int] | None] = ContextVar("countersign_pinned_span_ids", default=None)
_provider: TracerProvider | None = None


class PinnedIdGenerator(IdGenerator):
    """The SDK's random ids, except for a span started inside ``pinned_ids``."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        pinned = _PINNED.get()
        return pinned[1] if pinned else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        # Asked only for a span without a parent: a run's root span.
        pinned = _PINNED.get()
        return pinned[0] if pinned else self._random.generate_trace_id()


@contextmanager
def pinned_ids(*, trace_id: int, span_id: int) -> Iterator[None]:
    token = _PINNED.set((trace_id, span_id))
    try:
        yield
    finally:
        _PINNED.reset(token)


def tracing_configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def tracing_install(processor: SpanProcessor) -> TracerProvider:
    """Make this process's provider, its spans going to ``processor``; replaces an earlier one."""
    global _provider
    tracing_shutdown()
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    _provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service}),
        id_generator=PinnedIdGenerator(),
        shutdown_on_exit=True,  # the ASGI server's process flushes what is left when it exits
    )
    _provider.add_span_processor(processor)
    return _provider


def tracing_setup() -> TracerProvider | None:
    """Once per process: an OTLP/HTTP exporter behind a batch processor when the variables ask
    for one, else nothing. Safe to call again."""
    if _provider is not None or not tracing_configured():
        return _provider
    # Imported here: a process without an endpoint never loads the exporter (nor requests).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = tracing_install(BatchSpanProcessor(OTLPSpanExporter()))
    logger.info("run traces are exported over OTLP/HTTP")
    return provider


def tracing_shutdown() -> None:
    """Flush and drop the provider (a worker process that stops, a test that ends)."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def tracer() -> Tracer | None:
    if _provider is None:
        return None
    return _provider.get_tracer(INSTRUMENTATION_NAME)
