from __future__ import annotations

import datetime as dt
from typing import TypedDict

from django.db.models import Count, Min, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.chain import GENESIS_HASH
from audit.merkle import inclusion_path, leaf_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.signing import ALGORITHM, checkpoint_message, public_key_b64, tree_head_message
from audit.verification import ChainBreak, ChainReport, audit_chain_verify
from config.errors import Conflict, DomainError

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
    sequence: int
    head_hash: str
    sealed_at: dt.datetime | None
    signature: str | None
    key_id: str | None
    signed_message: str | None
    public_key: str
    algorithm: str
    pending: int
    root_hash: str | None
    tree_signature: str | None
    tree_signed_message: str | None


def audit_head() -> AuditHead:
    """The latest signed checkpoint with the key that checks it: record its head elsewhere to
    detect a rewrite later. Before the first seal: sequence 0, the genesis hash, no signature."""
    checkpoint = AuditCheckpoint.objects.order_by("-sequence").first()
    head: AuditHead = {
        "sequence": 0,
        "head_hash": GENESIS_HASH,
        "sealed_at": None,
        "signature": None,
        "key_id": None,
        "signed_message": None,
        "public_key": public_key_b64(),
        "algorithm": ALGORITHM,
        "pending": AuditEvent.objects.filter(sequence__isnull=True).count(),
        "root_hash": None,
        "tree_signature": None,
        "tree_signed_message": None,
    }
    if checkpoint is not None:
        message = checkpoint_message(
            sequence=checkpoint.sequence, head_hash=checkpoint.head_hash, sealed_at=checkpoint.sealed_at
        )
        head["sequence"], head["head_hash"] = checkpoint.sequence, checkpoint.head_hash
        head["sealed_at"], head["signature"] = checkpoint.sealed_at, checkpoint.signature
        head["key_id"] = checkpoint.key_id
        head["signed_message"] = message.decode()
        if checkpoint.root_hash is not None:
            head["root_hash"], head["tree_signature"] = checkpoint.root_hash, checkpoint.tree_signature
            head["tree_signed_message"] = tree_head_message(
                tree_size=checkpoint.sequence,
                root_hash=checkpoint.root_hash,
                head_hash=checkpoint.head_hash,
                sealed_at=checkpoint.sealed_at,
            ).decode()
    return head


def audit_backlog() -> tuple[int, dt.datetime | None]:
    """How many events wait for the sealer, and when the oldest of them was written."""
    # One query over the pending rows only (the unique index on sequence holds the NULLs too).
    backlog = AuditEvent.objects.filter(sequence__isnull=True).aggregate(n=Count("pk"), oldest=Min("created_at"))
    return int(backlog["n"]), backlog["oldest"]


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


class ProofNotFound(DomainError):
    status_code = 404
    code = "not_found"


class ProofUnavailable(Conflict):
    code = "not_provable"


class AuditProof(TypedDict):
    event: AuditEvent
    leaf_index: int
    tree_size: int
    root_hash: str
    audit_path: list[str]
    checkpoint: dict[str, object]
    public_key: str
    algorithm: str


def _proof_checkpoint(sequence: int | None) -> AuditCheckpoint:
    checkpoints = AuditCheckpoint.objects.order_by("-sequence")
    if sequence is None:
        latest = checkpoints.filter(root_hash__isnull=False).first()
        if latest is None:
            raise ProofUnavailable("No checkpoint signs a tree yet: nothing can be proven until the sealer has run.")
        return latest
    chosen = checkpoints.filter(sequence=sequence).first()
    if chosen is None:
        raise ProofNotFound(f"No checkpoint at sequence {sequence}.")
    if chosen.root_hash is None or chosen.tree_signature is None:
        raise ProofUnavailable(f"Checkpoint {sequence} was signed before checkpoints had trees; choose a later one.")
    return chosen


def audit_event_proof(*, event_id: int, checkpoint: int | None = None) -> AuditProof:
    """The RFC 6962 audit path of one sealed event in the tree a checkpoint signs (the latest
    by default). Raises ProofNotFound (no such event or checkpoint) or ProofUnavailable (the event
    is pending or sealed after that checkpoint)."""
    event = AuditEvent.objects.filter(pk=event_id).first()
    if event is None:
        raise ProofNotFound(f"No audit event {event_id}.")
    if event.sequence is None:
        raise ProofUnavailable(f"Audit event {event_id} is not sealed yet: it has no place in the tree.")
    signed = _proof_checkpoint(checkpoint)
    if event.sequence > signed.sequence:
        raise ProofUnavailable(
            f"Audit event {event_id} (number {event.sequence}) was sealed after checkpoint {signed.sequence}."
        )
    # Every leaf of the tree: the path's nodes are roots of subtrees around the event's leaf.
    hashes = (
        AuditEvent.objects.filter(sequence__isnull=False, sequence__lte=signed.sequence)
        .order_by("sequence")
        .values_list("hash", flat=True)
    )
    leaves = [leaf_hash(bytes.fromhex(str(value))) for value in hashes.iterator(chunk_size=10000)]
    if len(leaves) != signed.sequence:
        raise ProofUnavailable(f"The chain does not hold checkpoint {signed.sequence}'s events: run audit_verify.")
    message = tree_head_message(
        tree_size=signed.sequence,
        root_hash=str(signed.root_hash),
        head_hash=signed.head_hash,
        sealed_at=signed.sealed_at,
    )
    return {
        "event": event,
        "leaf_index": event.sequence - 1,
        "tree_size": signed.sequence,
        "root_hash": str(signed.root_hash),
        "audit_path": [node.hex() for node in inclusion_path(event.sequence - 1, leaves)],
        "checkpoint": {
            "sequence": signed.sequence,
            "head_hash": signed.head_hash,
            "sealed_at": signed.sealed_at,
            "root_hash": signed.root_hash,
            "tree_signature": signed.tree_signature,
            "tree_signed_message": message.decode(),
            "key_id": signed.key_id,
        },
        "public_key": public_key_b64(),
        "algorithm": ALGORITHM,
    }


__all__ = [
    "AuditHead",
    "AuditProof",
    "ProofNotFound",
    "ProofUnavailable",
    "audit_event_proof",
    "ChainBreak",
    "ChainReport",
    "audit_backlog",
    "audit_chain_verify",
    "audit_event_list",
    "audit_head",
]
