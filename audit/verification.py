"""``audit_verify``'s walk: the sealed chain in sequence order, its signed checkpoints, the pending events.

It stops at the first problem and names it:

- a sealed event whose place is not the next one (a removed or renumbered event), whose link
  is not the hash before it, or whose content no longer matches its hashes;
- a checkpoint whose signature does not verify with the configured public key, whose head is
  not the hash at its place (the chain was rewritten after it was signed), whose Merkle root is
  not the root of the tree over the events up to its place (rebuilt here from the events), or
  whose place is beyond the end of the chain (events were removed from the end);
- a pending event whose content no longer matches the hash its writer gave it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from audit.chain import GENESIS_HASH, HASHED_FIELDS, chain_hash, content_hash
from audit.merkle import Frontier, leaf_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.signing import checkpoint_signature_ok, key_id, public_key_bytes, signature_ok, tree_head_message


@dataclass(frozen=True)
class ChainBreak:
    id: int | None  # the event, or None when the problem is a checkpoint past the end
    problem: str
    expected: str
    found: str
    what: str = "event"

    @property
    def subject(self) -> str:
        return f"{self.what} {self.id}" if self.what == "event" else self.what

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class ChainReport:
    count: int  # sealed events verified
    head: str
    head_id: int | None
    broken: ChainBreak | None
    seen_expected_head: bool | None = None
    pending: int = 0  # events not sealed yet (their content checked)
    checkpoints: int = 0  # signatures verified

    @property
    def intact(self) -> bool:
        return self.broken is None


VERIFY_COLUMNS = ("id", "sequence", "prev_hash", "hash", "content_hash", *HASHED_FIELDS)
CHECKPOINT_COLUMNS = ("sequence", "head_hash", "sealed_at", "signature", "key_id", "root_hash", "tree_signature")


class _Checkpoints:
    """The checkpoints in sequence order, checked as the walk passes their place."""

    def __init__(self, chunk_size: int) -> None:
        self.public_key = public_key_bytes()
        self.key_id = key_id(self.public_key)
        rows: Iterator[tuple[Any, ...]] = (
            AuditCheckpoint.objects.order_by("sequence")
            .values_list(*CHECKPOINT_COLUMNS)
            .iterator(chunk_size=chunk_size)
        )
        self.rows = (dict(zip(CHECKPOINT_COLUMNS, row, strict=True)) for row in rows)
        self.next: dict[str, Any] | None = next(self.rows, None)
        self.verified = 0

    def check(self, *, sequence: int, event_hash: str, event_id: int, tree: Frontier) -> ChainBreak | None:
        while self.next is not None and self.next["sequence"] <= sequence:
            checkpoint, self.next = self.next, next(self.rows, None)
            if checkpoint["sequence"] < sequence:
                continue  # only after a gap, which the walk reports itself
            problem = self._problem(checkpoint, event_hash, tree)
            if problem is not None:
                expected, found = problem[1], problem[2]
                return ChainBreak(event_id, problem[0], expected, found)
            self.verified += 1
        return None

    def _problem(self, checkpoint: dict[str, Any], event_hash: str, tree: Frontier) -> tuple[str, str, str] | None:
        place = checkpoint["sequence"]
        if checkpoint["key_id"] != self.key_id:
            return f"checkpoint {place} is signed by another key", self.key_id, checkpoint["key_id"]
        fields = {name: checkpoint[name] for name in ("sequence", "head_hash", "sealed_at", "signature")}
        if not checkpoint_signature_ok(**fields, public_key=self.public_key):
            return f"the signature of checkpoint {place} does not verify (forged or altered)", "valid", "invalid"
        if checkpoint["head_hash"] != event_hash:
            problem = f"its hash is not the head signed at checkpoint {place} (the chain was rewritten)"
            return problem, checkpoint["head_hash"], event_hash
        if checkpoint["root_hash"] is None and checkpoint["tree_signature"] is None:
            return None  # signed before checkpoints had trees
        message = tree_head_message(
            tree_size=place,
            root_hash=str(checkpoint["root_hash"]),
            head_hash=checkpoint["head_hash"],
            sealed_at=checkpoint["sealed_at"],
        )
        if not signature_ok(message=message, signature=str(checkpoint["tree_signature"]), public_key=self.public_key):
            return (
                f"the tree head signature of checkpoint {place} does not verify (forged or altered)",
                "valid",
                "invalid",
            )
        if checkpoint["root_hash"] != (root := tree.root().hex()):
            problem = f"the Merkle root signed at checkpoint {place} is not the tree of the events up to it"
            return problem, str(checkpoint["root_hash"]), root
        return None

    def past_the_end(self, sequence: int, head: str) -> ChainBreak | None:
        if self.next is None:
            return None
        place = self.next["sequence"]
        return ChainBreak(
            None,
            f"it names {place} events but the chain ends at {sequence} (events were removed from the end)",
            self.next["head_hash"],
            head,
            what=f"checkpoint {place}",
        )


def _sealed_problem(fields: dict[str, Any], *, place: int, prev_hash: str) -> ChainBreak | None:
    event_id: int = fields["id"]
    if fields["sequence"] != place:
        problem = "its place is not the next one (an event was removed, inserted or renumbered)"
        return ChainBreak(event_id, problem, str(place), str(fields["sequence"]))
    if fields["prev_hash"] != prev_hash:
        problem = "does not link to the event before it (an event was removed, inserted or rewritten)"
        return ChainBreak(event_id, problem, prev_hash, str(fields["prev_hash"]))
    recomputed = chain_hash(prev_hash=prev_hash, fields=fields)
    if recomputed != fields["hash"]:
        problem = "its content does not match its hash (the event was altered)"
        return ChainBreak(event_id, problem, recomputed, str(fields["hash"]))
    if fields["content_hash"] and content_hash(fields=fields) != fields["content_hash"]:
        problem = "its content hash was altered"
        return ChainBreak(event_id, problem, content_hash(fields=fields), fields["content_hash"])
    return None


def _pending_problem(fields: dict[str, Any]) -> ChainBreak | None:
    recomputed = content_hash(fields=fields)
    if fields["prev_hash"] is not None or fields["hash"] is not None:
        return ChainBreak(fields["id"], "it is not sealed but has chain hashes", "none", str(fields["hash"]))
    if recomputed != fields["content_hash"]:
        problem = "it is pending and its content does not match the hash it was written with (the event was altered)"
        return ChainBreak(fields["id"], problem, recomputed, fields["content_hash"])
    return None


def audit_chain_verify(
    *,
    chunk_size: int = 2000,
    expected_head: str = "",
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Walk the sealed events in sequence order, then the pending ones; stop at the first problem.

    ``expected_head`` is a hash recorded earlier outside the database (a checkpoint's head): the
    report says whether the chain still contains it.
    """
    rows: Iterator[tuple[Any, ...]] = (
        AuditEvent.objects.filter(sequence__isnull=False)
        .order_by("sequence")
        .values_list(*VERIFY_COLUMNS)
        .iterator(chunk_size=chunk_size)
    )
    checkpoints = _Checkpoints(chunk_size)
    tree = Frontier()
    prev_hash, head_id, count, seen = GENESIS_HASH, None, 0, False

    def report(broken: ChainBreak | None, pending: int = 0) -> ChainReport:
        found = (seen or prev_hash == expected_head) if expected_head else None
        return ChainReport(count, prev_hash, head_id, broken, found, pending, checkpoints.verified)

    for row in rows:
        fields = dict(zip(VERIFY_COLUMNS, row, strict=True))
        broken = _sealed_problem(fields, place=count + 1, prev_hash=prev_hash)
        if broken is None:
            tree.append(leaf_hash(bytes.fromhex(fields["hash"])))
            broken = checkpoints.check(sequence=count + 1, event_hash=fields["hash"], event_id=fields["id"], tree=tree)
        if broken is not None:
            return report(broken)
        prev_hash, head_id, count = fields["hash"], fields["id"], count + 1
        seen = seen or prev_hash == expected_head
        if progress is not None:
            progress(count)
    broken = checkpoints.past_the_end(count, prev_hash)
    if broken is not None:
        return report(broken)
    pending = 0
    for row in AuditEvent.objects.filter(sequence__isnull=True).order_by("id").values_list(*VERIFY_COLUMNS):
        fields = dict(zip(VERIFY_COLUMNS, row, strict=True))
        broken = _pending_problem(fields)
        if broken is not None:
            return report(broken, pending)
        pending += 1
    return report(None, pending)
