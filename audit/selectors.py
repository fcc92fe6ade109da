from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.chain import GENESIS_HASH, HASHED_FIELDS, chain_hash
from audit.models import AuditEvent

MOMENT_EXAMPLE = "2026-11-24 or 2026-11-24T09:30:00Z"


def parse_moment(value: str) -> dt.datetime:
    """An ISO 8601 date or datetime as an aware datetime; a date means its midnight, a
    datetime without an offset is in the current time zone (UTC). Raises ValueError."""
    text = value.strip()
    if not (text.isascii() and text.isprintable()):
        # ISO 8601 is printable ASCII; Python's parser stops at a NUL and takes what came before.
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date or datetime (for example {MOMENT_EXAMPLE}).")
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            if day is not None:
                moment = dt.datetime.combine(day, dt.time.min)
    except ValueError:
        moment = None  # well formed but impossible, such as 2026-02-30
    if moment is None:
        raise ValueError(f"{value!r} is not an ISO 8601 date or datetime (for example {MOMENT_EXAMPLE}).")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    try:
        # The database compares in UTC: a moment that has no UTC equivalent (0001-01-01T00:00+01:00,
        # 9999-12-31T23:59-01:00) would fail there, as a server error.
        moment.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{value!r} is out of range: it has no UTC equivalent (years 1 to 9999).") from None
    return moment


class AuditHead(TypedDict):
    id: int | None
    hash: str
    created_at: dt.datetime | None
    count: int


def audit_head() -> AuditHead:
    """The newest event of the chain: record its hash somewhere else to detect a rewrite."""
    head = AuditEvent.objects.order_by("-id").values("id", "hash", "created_at").first()
    if head is None:
        return {"id": None, "hash": GENESIS_HASH, "created_at": None, "count": 0}
    return {**head, "count": AuditEvent.objects.count()}


def audit_event_list(
    *,
    action: str = "",
    action_prefix: str = "",
    actor: str = "",
    actor_type: str = "",
    target_type: str = "",
    target_id: str = "",
    run: int | None = None,
    agent: str = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Events matching every given filter; ``since`` is inclusive, ``until`` exclusive."""
    events = AuditEvent.objects.all()
    if action:
        events = events.filter(action=action)
    if action_prefix:
        events = events.filter(action__startswith=action_prefix)
    if actor:
        events = events.filter(actor_repr=actor)
    if actor_type:
        events = events.filter(actor_type=actor_type)
    if target_type:
        events = events.filter(target_type=target_type)
    if target_id:
        events = events.filter(target_id=target_id)
    if run is not None:
        events = events.filter(run_id=run)
    if agent:
        events = events.filter(agent_slug=agent)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events


@dataclass(frozen=True)
class ChainBreak:
    id: int
    problem: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"event {self.id}: {self.problem}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class ChainReport:
    count: int
    head: str
    head_id: int | None
    broken: ChainBreak | None
    seen_expected_head: bool | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None


VERIFY_COLUMNS = ("id", "prev_hash", "hash", *HASHED_FIELDS)


def audit_chain_verify(
    *,
    chunk_size: int = 2000,
    expected_head: str = "",
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Walk every event in id order, recompute its hash and check it links to the one before.

    Stops at the first broken event. ``expected_head`` is a hash recorded earlier outside
    the database: the report says whether the chain still contains it.
    """
    # values_list() over a list of columns: the ORM types its rows as tuples of Any.
    rows: Iterator[tuple[Any, ...]] = (
        AuditEvent.objects.order_by("id").values_list(*VERIFY_COLUMNS).iterator(chunk_size=chunk_size)
    )
    prev_hash: str = GENESIS_HASH
    head_id: int | None = None
    count = 0
    seen = False
    for row in rows:
        fields = dict(zip(VERIFY_COLUMNS, row, strict=True))
        event_id: int = fields["id"]
        if fields["prev_hash"] != prev_hash:
            problem = "does not link to the event before it (an event was removed, inserted or rewritten)"
            return ChainReport(count, prev_hash, head_id, ChainBreak(event_id, problem, prev_hash, fields["prev_hash"]))
        recomputed = chain_hash(prev_hash=prev_hash, fields=fields)
        if recomputed != fields["hash"]:
            problem = "its content does not match its hash (the event was altered)"
            return ChainReport(count, prev_hash, head_id, ChainBreak(event_id, problem, recomputed, fields["hash"]))
        prev_hash, head_id, count = fields["hash"], event_id, count + 1
        seen = seen or prev_hash == expected_head
        if progress is not None:
            progress(count)
    return ChainReport(count, prev_hash, head_id, None, seen if expected_head else None)
