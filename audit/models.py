from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from django.db import models

APPEND_ONLY = "Audit events are append-only"


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    # Every path that could change or remove rows in bulk is closed; the database refuses
    # UPDATE and DELETE as well (PostgreSQL: migration 0003, with TRUNCATE; SQLite: 0004).
    def update(self, **kwargs: Any) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: they cannot be updated.")

    def delete(self) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: they cannot be deleted.")

    def bulk_update(self, objs: Iterable[AuditEvent], fields: Iterable[str], batch_size: int | None = None) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: they cannot be updated.")

    def bulk_create(self, objs: Iterable[AuditEvent], *args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError(f"{APPEND_ONLY}: write them one by one with audit.services.audit_record().")


class AuditEvent(models.Model):
    """One row of the hash-chained, append-only log. Written only by audit_record()."""

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
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

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
