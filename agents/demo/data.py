"""Demo data: knowledge articles, tickets, the support and research agents, seeded rules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agents.definitions import agent_upsert
from agents.demo.models import KnowledgeArticle, Ticket
from agents.mcp.services import mcp_server_load
from approvals.models import BusinessRule
from audit.services import audit_record, audited_atomic

SUPPORT_AGENT: dict[str, Any] = {
    "slug": "support",
    "name": "Support agent",
    "objective": "Resolve a customer's refund request: find the policy, refund what is owed, tell the customer "
    "and close the ticket.",
    "scope": "May search the knowledge base, refund up to the order amount in the ledger, email the customer "
    "and update the ticket. May not change orders, give legal advice or refund other customers.",
    "tools": ["kb_search", "issue_refund", "send_email", "update_ticket"],
    "autonomy_level": 2,
    "input_schema": {
        "type": "object",
        "required": ["ticket_id", "customer_email", "amount"],
        "properties": {
            "ticket_id": {"type": "integer", "minimum": 1},
            "customer_email": {"type": "string", "format": "email", "maxLength": 254},
            "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
            "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
            "reason": {"type": "string", "maxLength": 500},
        },
        "additionalProperties": False,
    },
    "playbook": {
        "steps": [
            {
                "id": "policy",
                "tool": "kb_search",
                "arguments": {"query": "refund policy"},
                "rationale": "Check the refund policy before acting.",
            },
            {
                "id": "refund",
                "tool": "issue_refund",
                "arguments": {
                    "ticket_id": "{{input.ticket_id}}",
                    "amount": "{{input.amount}}",
                    "currency": "{{input.currency}}",
                    "reason": "{{input.reason}}",
                },
                "rationale": "The customer asks for {{input.amount}} {{input.currency}} back: {{input.reason}}",
            },
            {
                "id": "email",
                "tool": "send_email",
                "arguments": {
                    "to": "{{input.customer_email}}",
                    "subject": "Your refund",
                    "body": "Hello, your refund of {{steps.refund.output.amount}} "
                    "{{steps.refund.output.currency}} is on its way.",
                },
                "when": {"path": "steps.refund.status", "op": "==", "value": "succeeded"},
                "rationale": "Tell the customer the refund was issued.",
            },
            {
                "id": "close",
                "tool": "update_ticket",
                "arguments": {
                    "ticket_id": "{{input.ticket_id}}",
                    "status": "solved",
                    "note": "Refund {{steps.refund.status}}.",
                },
                "rationale": "Record the outcome on the ticket.",
            },
            {
                "final": {
                    "refund": "{{steps.refund.status}}",
                    "refund_output": "{{steps.refund.output}}",
                    "email": "{{steps.email.status}}",
                    "ticket": "{{steps.close.status}}",
                }
            },
        ]
    },
}

RESEARCH_AGENT: dict[str, Any] = {
    "slug": "research",
    "name": "Research agent",
    "objective": "Answer a question from the knowledge base.",
    "scope": "Read-only: may search the knowledge base; may not change anything.",
    "tools": ["kb_search"],
    "autonomy_level": 4,
    "input_schema": {
        "type": "object",
        "required": ["question"],
        "properties": {"question": {"type": "string", "minLength": 1, "maxLength": 2000}},
        "additionalProperties": False,
    },
    "playbook": {
        "steps": [
            {
                "id": "search",
                "tool": "kb_search",
                "arguments": {"query": "{{input.question}}", "limit": 3},
                "rationale": "Look the question up.",
            },
            {"final": {"question": "{{input.question}}", "sources": "{{steps.search.output.results}}"}},
        ]
    },
}

# The MCP server of the clock agent: mcp-server-time from requirements.txt, started as a local
# process on the first call (offline). Its tools are read-only; the operator says so here.
TIME_SERVER: dict[str, Any] = {
    "slug": "time",
    "transport": "stdio",
    "command": str(Path(sys.executable).parent / "mcp-server-time"),
    "args": ["--local-timezone", "UTC"],
    "timeout_seconds": 10.0,
    "risks": {"get_current_time": "read", "convert_time": "read"},
}

CLOCK_AGENT: dict[str, Any] = {
    "slug": "clock",
    "name": "Clock agent",
    "objective": "Tell the current time in a timezone, from the time MCP server.",
    "scope": "Read-only: may ask the time MCP server for the time; may not change anything.",
    "tools": ["time.get_current_time"],
    "autonomy_level": 2,
    "input_schema": {
        "type": "object",
        "required": ["timezone"],
        "properties": {"timezone": {"type": "string", "minLength": 1, "maxLength": 64}},
        "additionalProperties": False,
    },
    "playbook": {
        "steps": [
            {
                "id": "now",
                "tool": "time.get_current_time",
                "arguments": {"timezone": "{{input.timezone}}"},
                "rationale": "Ask the time server.",
            },
            {"final": {"timezone": "{{input.timezone}}", "now": "{{steps.now.output}}"}},
        ]
    },
}

ARTICLES = [
    (
        "Refund policy",
        "Refunds are issued to the original payment method within 30 days of purchase. "
        "Refunds over 500 USD need a person's approval.",
    ),
    ("Shipping times", "Orders ship within two business days; express shipping takes one day."),
    ("Changing an order", "Orders can be changed until they ship. After that, return and reorder."),
]

RULES: list[dict[str, Any]] = [
    {
        "tool": "issue_refund",
        "field": "amount",
        "operator": ">",
        "value": 500,
        "effect": "require_approval",
        "note": "Refunds over $500 need a person.",
    },
    {
        "tool": "issue_refund",
        "field": "amount",
        "operator": ">",
        "value": 5000,
        "effect": "block",
        "note": "Refunds over $5000 are never made by an agent.",
    },
    {
        "tool": "send_email",
        "field": "to:domain",
        "operator": "not_in",
        "value": ["example.com", "example.org", "customer.test"],
        "effect": "block",
        "note": "Email only customers on the allowlisted domains.",
    },
]


def rules_seed() -> int:
    created = 0
    for rule in RULES:
        with audited_atomic():
            made_rule, made = BusinessRule.objects.get_or_create(
                tool=rule["tool"],
                field=rule["field"],
                operator=rule["operator"],
                effect=rule["effect"],
                agent=None,
                defaults={"value": rule["value"], "note": rule["note"]},
            )
            if made:
                audit_record(actor="demo data", action="approvals.rule.created", target=made_rule, data=rule)
        created += made
    return created


def seed_demo_data() -> list[str]:
    """Create the demo agents and their data; returns what it did. Idempotent."""
    lines = []
    with audited_atomic():
        for title, body in ARTICLES:
            KnowledgeArticle.objects.get_or_create(title=title, defaults={"body": body})
        if not Ticket.objects.exists():
            Ticket.objects.create(subject="Refund for a broken kettle", customer_email="jane@example.com")
            Ticket.objects.create(subject="Double charge on my order", customer_email="omar@example.org")
        lines += mcp_server_load(TIME_SERVER, actor="demo data")
        for definition in (SUPPORT_AGENT, RESEARCH_AGENT, CLOCK_AGENT):
            agent, created = agent_upsert(definition)
            lines.append(f"agent {agent.slug} ({'created' if created else 'updated'})")
        made = rules_seed()
        lines.append(f"business rules: {made} created")
    return lines
