from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn, TypeVar

from django.db import models

APPEND_ONLY = "Audit events are append-only"
SEALED_BY_THE_SEALER = "only audit.sealer.seal_pending() gives an event its place in the chain"


_Row = TypeVar("_Row", bound=models.Model)


class AppendOnlyQuerySet(models.QuerySet[_Row]):
    # Every path that could change or remove rows in bulk is closed; the database refuses
    # UPDATE and DELETE as well (PostgreSQL: migrations 0003 and 0005, with TRUNCATE; SQLite:
    # 0004 and 0005), but for the sealer's one write of an event's place in the chain.
    def update(self, **kwargs: Any) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: they cannot be updated.")

    def delete(self) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: they cannot be deleted.")

    def bulk_update(self, objs: Iterable[_Row], fields: Iterable[str], batch_size: int | None = None) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: they cannot be updated.")

    def bulk_create(self, objs: Iterable[_Row], *args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: write them one by one with audit.services.audit_record().")


class AuditEvent(models.Model):
    """One row of the hash-chained, append-only log.

    Written by audit_record() with ``sequence``, ``prev_hash`` and ``hash`` empty (pending) and its
    ``content_hash`` set; the sealer fills the three chain columns once (audit/sealer.py), which is
    the only change the database lets through (migration 0005).
    """

    class ActorType(models.TextChoices):
        USER = "user"
        AGENT = "agent"
        SYSTEM = "system"

    created_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_repr = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    agent_slug = models.CharField(max_length=100, blank=True, db_index=True)
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    data = models.JSONField(default=dict)
    # sha256 of the canonical JSON of the hashed fields, taken when the event is written: an
    # event changed before it is sealed no longer matches it (empty on events sealed before 0005).
    content_hash = models.CharField(max_length=64, blank=True)
    # The place in the chain, from 1 without gaps; None while the event waits for the sealer.
    sequence = models.BigIntegerField(null=True, blank=True, unique=True)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)
    hash = models.CharField(max_length=64, unique=True, null=True, blank=True)

    objects = AppendOnlyQuerySet["AuditEvent"].as_manager()

    # Set by audit_record() on the one instance it may insert; read by save(). Declared, not
    # assigned: an instance without it is refused.
    _chain_append: bool

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]
        constraints = [
            # An event has at most one successor: even a writer that read a stale head
            # (a misconfigured isolation level, a SQLite database without IMMEDIATE
            # transactions) fails here instead of forking the chain.
            models.UniqueConstraint(fields=["prev_hash"], name="audit_event_one_successor"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} by {self.actor_repr or self.actor_type}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError(f"{APPEND_ONLY}: an existing event cannot be changed.")
        if not getattr(self, "_chain_append", False):
            raise PermissionError(f"{APPEND_ONLY}: write them with audit.services.audit_record().")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: an event cannot be deleted.")

    @property
    def sealed(self) -> bool:
        return self.sequence is not None


class AuditCheckpoint(models.Model):
    """A signed statement of the chain's head: "the first ``sequence`` events end in ``head_hash``".

    Written by the sealer after each batch, append-only like the events. Anyone holding the
    public key can check one (audit.signing.checkpoint_message is what is signed) and later
    prove the log still holds that head (``audit_verify --expect-head``).
    """

    sequence = models.BigIntegerField(unique=True)
    head_hash = models.CharField(max_length=64)
    sealed_at = models.DateTimeField()
    # Ed25519 over checkpoint_message(), base64; key_id names the public key that checks it.
    signature = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16)

    objects = AppendOnlyQuerySet["AuditCheckpoint"].as_manager()
    _chain_append: bool

    class Meta:
        ordering = ["sequence"]

    def __str__(self) -> str:
        return f"checkpoint {self.sequence} {self.head_hash[:12]}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError(f"{APPEND_ONLY}: a checkpoint cannot be changed.")
        if not getattr(self, "_chain_append", False):
            raise PermissionError(f"{APPEND_ONLY}: {SEALED_BY_THE_SEALER}.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: a checkpoint cannot be deleted.")
