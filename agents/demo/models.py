"""Where the demo tools' side effects land, so they can be counted. Tables of the agents app."""

from __future__ import annotations

from django.db import models


class KnowledgeArticle(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()

    def __str__(self) -> str:
        return self.title


class Ticket(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        PENDING = "pending"
        SOLVED = "solved"
        CLOSED = "closed"

    subject = models.CharField(max_length=200)
    customer_email = models.EmailField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    note = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"ticket {self.pk}: {self.subject}"


class OutboxEmail(models.Model):
    idempotency_key = models.CharField(max_length=64, unique=True)
    to = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"email to {self.to}: {self.subject}"


class LedgerEntry(models.Model):
    idempotency_key = models.CharField(max_length=64, unique=True)
    ticket = models.ForeignKey(Ticket, null=True, blank=True, on_delete=models.SET_NULL)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"refund {self.amount} {self.currency}"


class TicketChange(models.Model):
    """Lets update_ticket be reversible and idempotent: one row per call."""

    idempotency_key = models.CharField(max_length=64, unique=True)
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="changes")
    old_status = models.CharField(max_length=10)
    new_status = models.CharField(max_length=10)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"ticket {self.ticket_id}: {self.old_status} → {self.new_status}"
