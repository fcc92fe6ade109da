"""The tool registry: typed Python tools with a risk class, validated in and out.

Every call receives an idempotency key and must be safe to run twice with the same key:
the demo tools write one row per key (a unique column) and return that row on a repeat.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from django.db import IntegrityError, transaction
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Risk:
    READ = "read"
    WRITE_REVERSIBLE = "write_reversible"
    WRITE_IRREVERSIBLE = "write_irreversible"
    FINANCIAL = "financial"
    CHOICES = (READ, WRITE_REVERSIBLE, WRITE_IRREVERSIBLE, FINANCIAL)


# Not a tool: the name under which a flagged final answer waits for a person in the ledger.
FINAL_ANSWER = "final_answer"


@dataclass(frozen=True)
class ToolContext:
    idempotency_key: str
    run_id: int | None = None
    agent_slug: str = ""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    risk: str
    reversible: bool
    func: Callable[[Any, ToolContext], Any]
    # Tools that ask a person (ask_human) are answered by a reviewer, never executed.
    asks_human: bool = False
    # Finds the output of an earlier call with this idempotency key, if its effect exists:
    # how a call left "executing" by a crash is reconciled instead of blindly retried.
    lookup: Callable[[str], dict[str, Any] | None] | None = None
    timeout_seconds: float = 30.0

    @property
    def low_risk(self) -> bool:
        return self.risk in (Risk.READ, Risk.WRITE_REVERSIBLE) and self.reversible

    @property
    def is_read_only(self) -> bool:
        return self.risk == Risk.READ

    @property
    def permission(self) -> str:
        return f"agents.use_{self.name}"

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """Validated, normalized arguments; raises ToolArgumentsInvalid with field errors."""
        if not isinstance(arguments, dict):
            raise ToolArgumentsInvalid(self.name, {"arguments": ["must be a JSON object"]})
        try:
            return self.input_model.model_validate(arguments).model_dump(mode="json")
        except ValidationError as exc:
            raise ToolArgumentsInvalid(self.name, validation_errors(exc)) from None

    def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        parsed = self.input_model.model_validate(arguments)
        result = self.func(parsed, context)
        output = self.output_model.model_validate(result)
        return output.model_dump(mode="json")


class ToolArgumentsInvalid(Exception):
    def __init__(self, tool: str, errors: dict[str, list[str]]) -> None:
        super().__init__(f"Arguments for {tool} are invalid: {errors}")
        self.tool = tool
        self.errors = errors


def validation_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "arguments"
        errors.setdefault(field, []).append(error["msg"])
    return errors


def arguments_hash(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


registry: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    if tool.risk not in Risk.CHOICES:
        raise ValueError(f"{tool.name}: unknown risk class {tool.risk!r}")
    if tool.name == FINAL_ANSWER:
        raise ValueError(f"{FINAL_ANSWER!r} is reserved for final answers that wait for a person.")
    registry[tool.name] = tool
    return tool


# --- Demo tools --------------------------------------------------------------------------

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
    from django.db.models import Q

    from agents.models import KnowledgeArticle

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
    from agents.models import OutboxEmail

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
    from agents.models import LedgerEntry

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
    from agents.models import Ticket, TicketChange

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


def _lookup(model_name: str, output: Callable[[Any], dict[str, Any]]) -> Callable[[str], dict[str, Any] | None]:
    def find(key: str) -> dict[str, Any] | None:
        from django.apps import apps

        row = apps.get_model("agents", model_name).objects.filter(idempotency_key=key).first()
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
        lookup=_lookup("OutboxEmail", lambda e: {"message_id": e.pk, "to": e.to}),
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
        lookup=_lookup("LedgerEntry", lambda e: {"ledger_id": e.pk, "amount": str(e.amount), "currency": e.currency}),
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
            "TicketChange", lambda c: {"ticket_id": c.ticket_id, "old_status": c.old_status, "new_status": c.new_status}
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
