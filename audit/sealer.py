"""The sealer: gives committed audit events their place in the chain, in id order, and signs a checkpoint.

Writers insert events pending (``sequence`` NULL) in their own transactions and take no lock;
one sealer at a time (a transaction-scoped advisory lock on PostgreSQL, the write lock on
SQLite) walks them in id order, links each to the one before (``hash = sha256(prev_hash ||
canonical JSON)``), numbers them from 1 without gaps and writes a signed checkpoint, in batches.
This is how Certificate Transparency and Trillian logs work: clients submit, one sequencer
integrates. Each checkpoint also signs the root of the RFC 6962 Merkle tree over the events up to
it (audit/merkle.py), extended batch by batch from the frontier the checkpoint before it kept.

What a batch costs is mostly the database's: each sealed event is a new row version written to
every index of the table. On PostgreSQL a batch is one UPDATE (its links are checked once, by a
statement trigger: migration 0006), not one statement per event.

Why no event is skipped or sealed out of id order (PostgreSQL). Ids come from a sequence and
may commit out of order. Before sealing, the sealer

1. reads L, the last id the sequence handed out; every id <= L is taken already;
2. reads the transactions other than its own that hold ROW EXCLUSIVE on the audit table
   (pg_locks). A writer takes that lock when its INSERT starts, before the INSERT draws its id,
   and keeps it until it commits or rolls back; so a writer of an id <= L that has not ended is
   among them;
3. waits until each of those transactions has ended (committed: its rows are visible now;
   rolled back: its id is a hole that never fills);
4. seals, in a new snapshot, the pending events with id <= L in id order.

So when ids up to L are sealed, no event with an id <= L can still appear, and the next pass
starts above L: the chain order is the id order, and every committed event is sealed once
(``sequence IS NULL`` is the whole backlog; the UPDATE is conditional on it, ``sequence`` and
``prev_hash`` are unique). A rolled-back writer's lock goes with its transaction, so its hole
never blocks. The one exception is bounded: a writer transaction open for longer than
AUDIT_SEAL_MAX_LAG_SECONDS is not waited for (the rest of the log would stall behind it); if it
commits later, its event is sealed at the next free place, after events with higher ids.

On SQLite every writing transaction takes the database write lock at BEGIN (IMMEDIATE, checked
by audit.W001), the sealer's too: when it runs no other writer is open, and ids are given in
commit order. Everything visible is sealable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from audit.chain import GENESIS_HASH, HASHED_FIELDS, event_hashes
from audit.merkle import Frontier, leaf_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.signing import checkpoint_sign, key_id, tree_head_sign

logger = logging.getLogger(__name__)

# Names the advisory lock only one sealer holds at a time.
SEALER_LOCK_KEY = 0x5365616C  # "Seal"
BATCH_SIZE = 1000
# How long one pass waits for writers that hold ids below the horizon, polling this often.
WRITER_WAIT_SECONDS = 2.0
WRITER_POLL_SECONDS = 0.002
TABLE = AuditEvent._meta.db_table
SEAL_COLUMNS = ("id", "content_hash", *HASHED_FIELDS)

_OPEN_WRITERS = """
    SELECT DISTINCT virtualtransaction FROM pg_locks
    WHERE locktype = 'relation' AND relation = %s::regclass AND mode = 'RowExclusiveLock'
      AND granted AND pid <> pg_backend_pid()
"""
# The table name is the model's own, never input.
_SEAL = f"UPDATE {TABLE} SET sequence = %s, prev_hash = %s, hash = %s WHERE id = %s AND sequence IS NULL"  # noqa: S608
# PostgreSQL: a whole batch in one statement (its links are checked after it, migration 0006).
_SEAL_BATCH = f"""
    UPDATE {TABLE} AS e SET sequence = v.sequence, prev_hash = v.prev_hash, hash = v.hash
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[]) AS v(sequence, prev_hash, hash, id)
    WHERE e.id = v.id AND e.sequence IS NULL
"""  # noqa: S608
# Of the given transactions, those still open and younger than the straggler bound.
_STILL_OPEN = """
    SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'virtualxid' AND l.mode = 'ExclusiveLock' AND l.virtualxid = ANY(%s)
      AND (a.xact_start IS NULL OR a.xact_start > now() - make_interval(secs => %s))
"""


class SealRefused(RuntimeError):
    """A pending event no longer matches the content hash its writer gave it: it was changed."""


def _pg_horizon(*, wait: float) -> int | None:
    """The highest id below which every writer has ended, or None when they did not within ``wait``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)", [TABLE])
        last = cursor.fetchone()[0]
        if last is None:
            return None  # no id was ever given
        cursor.execute(_OPEN_WRITERS, [TABLE])
        writers = [row[0] for row in cursor.fetchall()]
        deadline = time.monotonic() + wait
        while writers:
            # pg_stat_activity is read once per transaction unless told to read again.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(_STILL_OPEN, [writers, float(settings.AUDIT_SEAL_MAX_LAG_SECONDS)])
            if cursor.fetchone()[0] == 0:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(WRITER_POLL_SECONDS)
    return int(last)


def _horizon(*, wait: float) -> int | None:
    if connection.vendor == "postgresql":
        return _pg_horizon(wait=wait)
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()


def _take_sealer_lock() -> bool:
    if connection.vendor != "postgresql":
        return True  # the IMMEDIATE transaction holds the database write lock already
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEALER_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def chain_tail() -> tuple[int, str]:
    """The last sealed place and its hash (0 and the genesis hash for an empty chain)."""
    tail = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").values_list("sequence", "hash")
    last = tail.first()
    if last is None or last[0] is None:
        return 0, GENESIS_HASH
    return int(last[0]), str(last[1])


def _frontier(*, sequence: int) -> Frontier:
    """The Merkle frontier of the first ``sequence`` events: the last checkpoint's, or rebuilt
    from the events (once, for a chain sealed before checkpoints had trees)."""
    last = AuditCheckpoint.objects.order_by("-sequence").values_list("sequence", "frontier").first()
    if last is not None and last[0] == sequence and isinstance(last[1], list):
        try:
            return Frontier(sequence, [bytes.fromhex(str(node)) for node in last[1]])
        except ValueError:
            logger.warning("checkpoint %s has a malformed Merkle frontier; rebuilding it from the events", sequence)
    frontier = Frontier()
    hashes = (
        AuditEvent.objects.filter(sequence__isnull=False, sequence__lte=sequence)
        .order_by("sequence")
        .values_list("hash", flat=True)
        .iterator(chunk_size=5000)
    )
    for event_hash in hashes:
        frontier.append(leaf_hash(bytes.fromhex(str(event_hash))))
    return frontier


def _seal_batch(*, horizon: int, batch_size: int) -> int:
    with transaction.atomic():
        if not _take_sealer_lock():
            return 0  # another sealer is at work; it seals these too
        sequence, prev_hash = chain_tail()
        rows: list[tuple[Any, ...]] = list(
            AuditEvent.objects.filter(sequence__isnull=True, id__lte=horizon)
            .order_by("id")
            .values_list(*SEAL_COLUMNS)[:batch_size]
        )
        if not rows:
            return 0
        frontier = _frontier(sequence=sequence)
        updates: list[tuple[int, str, str, int]] = []
        refused: SealRefused | None = None
        for row in rows:
            fields = dict(zip(SEAL_COLUMNS, row, strict=True))
            written, event_hash = event_hashes(prev_hash=prev_hash, fields=fields)
            if fields["content_hash"] and written != fields["content_hash"]:
                refused = SealRefused(f"audit event {fields['id']} was changed after it was written; not sealed")
                break
            sequence += 1
            updates.append((sequence, prev_hash, event_hash, fields["id"]))
            frontier.append(leaf_hash(bytes.fromhex(event_hash)))
            prev_hash = event_hash
        if updates:
            _write_places(updates)
            _checkpoint(sequence=sequence, head_hash=prev_hash, frontier=frontier)
    if refused is not None:
        # Sealing it would sign the change; sealing past it would break the id order. The chain
        # stops here, /healthz reports the lag and audit_verify names the event.
        logger.error("%s", refused)
        raise refused
    return len(updates)


def _write_places(updates: list[tuple[int, str, str, int]]) -> None:
    # Raw SQL: the model refuses updates; the trigger lets exactly this one write through.
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.executemany(_SEAL, updates)  # in order: SQLite's row trigger checks each link
            return
        columns = [list(column) for column in zip(*updates, strict=True)]
        cursor.execute(_SEAL_BATCH, columns)
        if cursor.rowcount != len(updates):
            # Only under the sealer's lock are events sealed, so this is a broken invariant: undo all.
            raise RuntimeError(f"sealed {cursor.rowcount} of {len(updates)} events; the batch is rolled back")


def _checkpoint(*, sequence: int, head_hash: str, frontier: Frontier) -> AuditCheckpoint:
    sealed_at = timezone.now()
    root_hash = frontier.root().hex()
    checkpoint = AuditCheckpoint(
        sequence=sequence,
        head_hash=head_hash,
        sealed_at=sealed_at,
        signature=checkpoint_sign(sequence=sequence, head_hash=head_hash, sealed_at=sealed_at),
        key_id=key_id(),
        root_hash=root_hash,
        tree_signature=tree_head_sign(
            tree_size=sequence, root_hash=root_hash, head_hash=head_hash, sealed_at=sealed_at
        ),
        frontier=[node.hex() for node in frontier.nodes],
    )
    checkpoint._chain_append = True
    checkpoint.save(force_insert=True)
    return checkpoint


def seal_pending(*, wait: float = WRITER_WAIT_SECONDS, batch_size: int = BATCH_SIZE) -> int:
    """Seal every committed pending event that may be sealed now; returns how many.

    Waits up to ``wait`` seconds for writers that hold lower ids to end. Raises SealRefused
    when a pending event was changed behind the database's back (after sealing those before it).
    """
    horizon = _horizon(wait=wait)
    if horizon is None:
        return 0
    sealed = 0
    while True:
        count = _seal_batch(horizon=horizon, batch_size=batch_size)
        sealed += count
        if count < batch_size:
            return sealed


def seal_forever(*, interval: float, stop: Callable[[], bool] = lambda: False) -> None:
    """Seal, then wait ``interval`` seconds, until ``stop()``; a failed pass is logged and retried."""
    while not stop():
        try:
            seal_pending()
        except SealRefused:
            pass  # logged; retried, so that an event put back as it was is sealed again
        except ImproperlyConfigured:
            raise  # no signing key: nothing can be sealed until it is set
        except Exception:
            logger.exception("audit sealing failed; retrying")
            connection.close()
        time.sleep(interval)
