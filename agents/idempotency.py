"""``Idempotency-Key`` on ``POST /api/v1/agents/{slug}/runs/``: the IETF draft, as Stripe applies it.

A client may send ``Idempotency-Key: <1 to 255 characters>`` with a start and retry the request
with the same key when it did not get an answer. Within 24 hours, for the same user:

- the same key and the same request (agent and body) get the first answer again, status and
  body, with ``Idempotent-Replayed: true``, and no second run;
- the same key with another request: 422 ``idempotency_key_reused``;
- the same key while the first request is still in flight: 409 ``idempotency_key_in_flight``.

Only an answer that created a run is kept. A request refused (invalid input, agent disabled, an
error) frees its key, as Stripe keeps no result for a request that did not execute.

In flight means: the key is claimed in a transaction of its own, committed before the run's
transaction starts, so a concurrent retry sees the claim and does not wait for, or duplicate,
the run. The answer is stored inside the run's transaction (``run_create``'s ``on_created``):
the run and the stored answer commit together or not at all. A claim older than
``LOCK_SECONDS`` belongs to a request that died between the two transactions; the next retry
takes it over, and should the first request still be alive, it finds its claim gone and rolls
its run back (409). The sweeper purges keys after ``TTL``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent, IdempotencyKey, Run
from agents.runtime import run_create
from audit.types import JSON, AnyUser
from config.errors import Conflict, DomainError

HEADER = "Idempotency-Key"
KEY_MAX_LENGTH = 255
TTL = timedelta(hours=24)
LOCK_SECONDS = 60
CREATED = 201


class IdempotencyKeyInvalid(DomainError):
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(DomainError):
    status_code = 422
    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(Conflict):
    code = "idempotency_key_in_flight"


@dataclass(frozen=True)
class Answer:
    status: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)


def idempotency_key_parse(raw: str | None) -> str | None:
    """The header's value, None when absent; IdempotencyKeyInvalid (400) when empty or too long."""
    if raw is None:
        return None
    key = raw.strip()
    if not key:
        raise IdempotencyKeyInvalid(
            f"The {HEADER} header is empty.", details={"errors": {HEADER: ["must not be empty"]}}
        )
    if len(key) > KEY_MAX_LENGTH:
        raise IdempotencyKeyInvalid(
            f"The {HEADER} header is {len(key)} characters long; the limit is {KEY_MAX_LENGTH}.",
            details={"errors": {HEADER: [f"at most {KEY_MAX_LENGTH} characters"]}},
        )
    return key


def request_fingerprint(*, agent: Agent, body: JSON) -> str:
    """What makes two starts the same request: the agent and the parsed body, keys sorted."""
    canonical = json.dumps(
        {"agent": agent.slug, "body": body},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        cls=DjangoJSONEncoder,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_start(
    *,
    agent: Agent,
    user: AnyUser,
    payload: JSON,
    body: JSON,
    key: str | None,
    render: Callable[[Run], JSON],
) -> Answer:
    """Start a run, or answer a retry of a start: ``render`` makes the answer's body of a run."""
    if key is None:
        return Answer(CREATED, render(run_create(agent=agent, user=user, payload=payload)))
    if user.pk is None:  # the API lets only signed-in users start runs; keys are theirs
        raise IdempotencyKeyInvalid(f"An {HEADER} needs a signed-in user.")
    claim = _claim(user_id=user.pk, key=key, fingerprint=request_fingerprint(agent=agent, body=body))
    if isinstance(claim, Answer):
        return claim
    answered: list[JSON] = []

    def store(run: Run) -> None:
        # Inside the run's transaction: the answer commits with the run or not at all.
        answer = render(run)
        stored = IdempotencyKey.objects.filter(pk=claim.pk, response_status=None).update(
            response_status=CREATED, response_body=json.dumps(answer, cls=DjangoJSONEncoder, ensure_ascii=False)
        )
        if not stored:
            raise IdempotencyKeyInFlight(
                f"A retry with this {HEADER} took over after {LOCK_SECONDS} s; this request's run is undone."
            )
        answered.append(answer)

    try:
        run_create(agent=agent, user=user, payload=payload, on_created=store)
    except BaseException:
        # No run: free the key, so that a retry (of a request that can now succeed) may use it.
        IdempotencyKey.objects.filter(pk=claim.pk, response_status=None).delete()
        raise
    return Answer(CREATED, answered[0])


def _claim(*, user_id: int, key: str, fingerprint: str) -> IdempotencyKey | Answer:
    """Claim the key in a transaction of its own, or answer from the request that claimed it."""
    for _attempt in range(3):
        now = timezone.now()
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(user_id=user_id, key=key, fingerprint=fingerprint, created_at=now)
        except IntegrityError:
            pass
        existing = IdempotencyKey.objects.filter(user_id=user_id, key=key).first()
        if existing is None:
            continue  # freed meanwhile (the first request failed): claim it now
        if existing.created_at <= now - TTL:
            IdempotencyKey.objects.filter(pk=existing.pk).delete()  # expired, not purged yet
            continue
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                f"This {HEADER} was used for another request (another agent or body) in the last 24 hours: "
                "use a new key for a new request."
            )
        if existing.response_status is not None:
            return Answer(existing.response_status, json.loads(existing.response_body), {"Idempotent-Replayed": "true"})
        if existing.created_at <= now - timedelta(seconds=LOCK_SECONDS):
            # The request that claimed it died before it answered: take over.
            IdempotencyKey.objects.filter(pk=existing.pk, response_status=None).delete()
            continue
        break
    raise IdempotencyKeyInFlight(f"A request with this {HEADER} is still in flight: retry once it has been answered.")


def idempotency_keys_purge(*, now: datetime | None = None) -> dict[str, int]:
    """The sweeper's part: keys older than TTL are forgotten."""
    now = now or timezone.now()
    purged, _ = IdempotencyKey.objects.filter(created_at__lte=now - TTL).delete()
    return {"idempotency_keys_purged": purged}
