"""Operational endpoints: ``/healthz`` (reachability) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.db.utils import load_backend
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest

from audit.selectors import audit_backlog
from config.celery import broker_redis
from config.clients import client_address, is_loopback
from config.metrics import DatabaseCollector

logger = logging.getLogger(__name__)

# A load balancer probes often: a part that does not answer within this is down.
CHECK_TIMEOUT_SECONDS = 1.0


# The database probe runs on these threads, each with its own short-lived connection, so the
# request waits at most CHECK_TIMEOUT_SECONDS whatever the driver does. Two threads at most: a
# probe stuck on a database that does not answer must not pile up threads (the driver timeouts
# below end it soon after), and the next probe still gets a free one.
_database_probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="healthz-db")


def probe_settings(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """The database settings for a probe connection: never kept, and with the driver's own timeouts."""
    probe = copy.deepcopy(settings_dict)
    options = dict(probe.get("OPTIONS") or {})
    if probe["ENGINE"] == "django.db.backends.postgresql":
        # libpq and psycopg raise a connect timeout below 2 s to 2 s; the thread bounds the wait
        # to 1 s, this ends the thread. The server ends a statement after 1 s.
        options["connect_timeout"] = 2
        options["tcp_user_timeout"] = 2000  # ms: a peer gone mid-query is noticed, not waited for
        options.pop("pool", None)  # one plain connection, not a pool per probe
    elif probe["ENGINE"] == "django.db.backends.sqlite3":
        options["timeout"] = CHECK_TIMEOUT_SECONDS  # the busy timeout, 20 s for the app
    probe["OPTIONS"] = options
    probe["CONN_MAX_AGE"] = 0
    return probe


def _probe_database(settings_dict: dict[str, Any]) -> None:
    wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict)
    try:
        with wrapper.cursor() as cursor:
            if wrapper.vendor == "postgresql":
                # Set after connecting, not as a startup option, which PgBouncer refuses.
                cursor.execute("SET statement_timeout = %s", [int(CHECK_TIMEOUT_SECONDS * 1000)])
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        wrapper.close()


def check_database() -> None:
    future = _database_probes.submit(_probe_database, probe_settings(connection.settings_dict))
    try:
        future.result(timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:  # concurrent.futures raises the built-in one since Python 3.11
        future.cancel()  # if it still waits behind stuck probes, it never runs
        raise TimeoutError(f"the database did not answer within {CHECK_TIMEOUT_SECONDS:.0f} s") from None


def check_broker() -> None:
    client = broker_redis(timeout=CHECK_TIMEOUT_SECONDS)
    try:
        client.ping()
    finally:
        client.close()


async def _channel_layer_roundtrip() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("healthz.")
    await layer.send(channel, {"type": "healthz.ping"})
    await layer.receive(channel)
    # The pub/sub layer forgets a channel when a receive on it is cancelled (a consumer leaving):
    # without this, each probe would leave a subscription behind in the serving process.
    parting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)  # one turn of the loop: the receive is waiting on its queue
    parting.cancel()
    await asyncio.gather(parting, return_exceptions=True)


def check_channel_layer() -> None:
    async def bounded() -> None:
        await asyncio.wait_for(_channel_layer_roundtrip(), timeout=CHECK_TIMEOUT_SECONDS)

    async_to_sync(bounded)()


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
    "channel_layer": check_channel_layer,
}

# Its own thread and connection, as the database probe: a database that hangs holds the probe, not the request.
_sealer_probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healthz-sealer")


def _seal_lag_seconds() -> float:
    from django.db import connection as thread_connection

    try:
        _, oldest = audit_backlog()
    finally:
        thread_connection.close()  # this thread's own connection: not kept between probes
    return max((timezone.now() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0


def check_audit_sealer() -> str:
    """ "ok", or "behind" when an audit event has waited longer than AUDIT_SEAL_MAX_LAG_SECONDS to be
    sealed. Reported, not failed: the web serves requests as before, and taking every web process
    out of a load balancer because the sealer stalls would turn a lag into an outage. Alert on
    countersign_audit_oldest_unsealed_seconds."""
    future = _sealer_probes.submit(_seal_lag_seconds)
    try:
        lag = future.result(timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        future.cancel()
        raise TimeoutError(f"the audit backlog was not read within {CHECK_TIMEOUT_SECONDS:.0f} s") from None
    return "behind" if lag > settings.AUDIT_SEAL_MAX_LAG_SECONDS else "ok"


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    report: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception:
            # The reason goes to the log, not to an unauthenticated caller.
            logger.warning("health check %s failed", name, exc_info=True)
            report[name] = "error"
        else:
            report[name] = "ok"
    healthy = all(value == "ok" for value in report.values())
    if healthy:
        try:
            report["audit_sealer"] = check_audit_sealer()
        except Exception:
            logger.warning("health check audit_sealer failed", exc_info=True)
            report["audit_sealer"] = "error"
    return JsonResponse(report, status=200 if healthy else 503)


registry = CollectorRegistry(auto_describe=False)
registry.register(DatabaseCollector())
ProcessCollector(registry=registry)


def _bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the caller may scrape: it sends ``Authorization: Bearer <METRICS_TOKEN>``, or no
    token is set and the client (as the trusted proxy chain gives it) is on loopback."""
    expected = settings.METRICS_TOKEN
    if expected:
        given = _bearer_token(request)
        if given is not None and hmac.compare_digest(given.encode(), expected.encode()):
            return None
        response = JsonResponse(
            {"detail": "Send Authorization: Bearer <METRICS_TOKEN> to read the metrics.", "code": "not_authenticated"},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if is_loopback(client_address(request)):
        return None
    return JsonResponse(
        {
            "detail": "Metrics are served to loopback clients only; set METRICS_TOKEN to scrape from elsewhere.",
            "code": "permission_denied",
        },
        status=403,
    )


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
