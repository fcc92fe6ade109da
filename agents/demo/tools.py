"""The demo tools: a knowledge base, an outbox, a payments ledger and support tickets.

Each writes one row per idempotency key (a unique column) and returns that row on a repeat,
so a redelivered or retried call never applies its effect twice.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from django.db import IntegrityError, transaction
from django.db.models import Q
from pydantic import BaseModel, ConfigDict, Field

from agents.demo.models import KnowledgeArticle, LedgerEntry, OutboxEmail, Ticket, TicketChange
from agents.tools import Risk, Tool, ToolContext, register

EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class KbSearchIn(Strict):
    query: str = Field(min_length=1, max_length=500, description="What to look for")
    limit: int = Field(default=3, ge=1, le=10)


class KbHit(BaseModel):
    id: int
    title: str
    snippet: str


class KbSearchOut(BaseModel):
    results: list[KbHit]


def kb_search(args: KbSearchIn, context: ToolContext) -> dict[str, Any]:
    words = [word for word in args.query.split() if len(word) > 2][:8] or [args.query]
    condition = Q()
    for word in words:
        condition |= Q(title__icontains=word) | Q(body__icontains=word)
    articles = KnowledgeArticle.objects.filter(condition).order_by("id")[: args.limit]
    return {"results": [{"id": a.pk, "title": a.title, "snippet": a.body[:200]} for a in articles]}


class SendEmailIn(Strict):
    to: str = Field(pattern=EMAIL_PATTERN, max_length=254, description="Recipient address")
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20_000)


class SendEmailOut(BaseModel):
    message_id: int
    to: str


def send_email(args: SendEmailIn, context: ToolContext) -> dict[str, Any]:
    email, _ = _once(
        OutboxEmail,
        context.idempotency_key,
        to=args.to,
        subject=args.subject,
        body=args.body,
    )
    return {"message_id": email.pk, "to": email.to}


class IssueRefundIn(Strict):
    ticket_id: int | None = Field(default=None, ge=1, description="Ticket the refund settles")
    amount: float = Field(gt=0, le=1_000_000, description="Amount to refund")
    currency: Literal["USD", "EUR", "GBP"] = Field(default="USD")
    reason: str = Field(default="", max_length=200)


class IssueRefundOut(BaseModel):
    ledger_id: int
    amount: str
    currency: str


def issue_refund(args: IssueRefundIn, context: ToolContext) -> dict[str, Any]:
    entry, _ = _once(
        LedgerEntry,
        context.idempotency_key,
        ticket_id=args.ticket_id,
        amount=Decimal(str(round(args.amount, 2))),
        currency=args.currency,
        reason=args.reason,
    )
    return {"ledger_id": entry.pk, "amount": str(entry.amount), "currency": entry.currency}


class UpdateTicketIn(Strict):
    ticket_id: int = Field(ge=1)
    status: Literal["open", "pending", "solved", "closed"]
    note: str = Field(default="", max_length=2000)


class UpdateTicketOut(BaseModel):
    ticket_id: int
    old_status: str
    new_status: str


def update_ticket(args: UpdateTicketIn, context: ToolContext) -> dict[str, Any]:
    with transaction.atomic():
        existing = TicketChange.objects.filter(idempotency_key=context.idempotency_key).first()
        if existing is None:
            ticket = Ticket.objects.select_for_update().get(pk=args.ticket_id)
            existing = TicketChange.objects.create(
                idempotency_key=context.idempotency_key,
                ticket=ticket,
                old_status=ticket.status,
                new_status=args.status,
                note=args.note,
            )
            ticket.status = args.status
            if args.note:
                ticket.note = (ticket.note + "\n" + args.note).strip()
            ticket.save(update_fields=["status", "note", "updated_at"])
    return {"ticket_id": existing.ticket_id, "old_status": existing.old_status, "new_status": existing.new_status}


class AskHumanIn(Strict):
    question: str = Field(min_length=1, max_length=2000)


class AskHumanOut(BaseModel):
    answer: str


def ask_human(args: AskHumanIn, context: ToolContext) -> dict[str, Any]:
    raise RuntimeError("ask_human is answered by a reviewer, never executed")


def _lookup(model: Any, output: Callable[[Any], dict[str, Any]]) -> Callable[[str], dict[str, Any] | None]:
    def find(key: str) -> dict[str, Any] | None:
        row = model.objects.filter(idempotency_key=key).first()
        return output(row) if row is not None else None

    return find


def _once(model: Any, key: str, **fields: Any) -> tuple[Any, bool]:
    # The unique idempotency key makes a repeated call (redelivery, retry after a crash)
    # return the row the first call wrote instead of writing a second one.
    try:
        with transaction.atomic():
            return model.objects.create(idempotency_key=key, **fields), True
    except IntegrityError:
        return model.objects.get(idempotency_key=key), False


register(
    Tool("kb_search", "Search the knowledge base for articles.", KbSearchIn, KbSearchOut, Risk.READ, True, kb_search)
)
register(
    Tool(
        "send_email",
        "Send an email to a customer.",
        SendEmailIn,
        SendEmailOut,
        Risk.WRITE_IRREVERSIBLE,
        False,
        send_email,
        lookup=_lookup(OutboxEmail, lambda e: {"message_id": e.pk, "to": e.to}),
    )
)
register(
    Tool(
        "issue_refund",
        "Refund money to a customer through the payments ledger.",
        IssueRefundIn,
        IssueRefundOut,
        Risk.FINANCIAL,
        False,
        issue_refund,
        lookup=_lookup(LedgerEntry, lambda e: {"ledger_id": e.pk, "amount": str(e.amount), "currency": e.currency}),
    )
)
register(
    Tool(
        "update_ticket",
        "Change a support ticket's status and add a note.",
        UpdateTicketIn,
        UpdateTicketOut,
        Risk.WRITE_REVERSIBLE,
        True,
        update_ticket,
        lookup=_lookup(
            TicketChange, lambda c: {"ticket_id": c.ticket_id, "old_status": c.old_status, "new_status": c.new_status}
        ),
    )
)
register(
    Tool(
        "ask_human",
        "Ask a person a question and wait for the answer.",
        AskHumanIn,
        AskHumanOut,
        Risk.READ,
        True,
        ask_human,
        asks_human=True,
    )
)
