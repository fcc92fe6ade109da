"""Helpers shared by the page tests: signed-in clients, a run waiting at its refund, CSRF tokens."""

from __future__ import annotations

from django.test import Client

from agents import runtime
from agents.models import Ticket
from approvals.models import ApprovalRequest

SCRIPT = "<script>alert('owned')</script>"


def client_for(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def waiting_refund(agent, starter, *, amount=120, reason="broken kettle") -> ApprovalRequest:
    ticket = Ticket.objects.first()
    run = runtime.run_create(
        agent=agent,
        user=starter,
        payload={
            "ticket_id": ticket.pk,
            "customer_email": "jane@example.com",
            "amount": amount,
            "currency": "USD",
            "reason": reason,
        },
    )
    runtime.run_advance(run_id=run.pk)
    return ApprovalRequest.objects.select_related("agent", "run").get(run=run, tool="issue_refund")


def csrf_token(client: Client, url: str) -> str:
    client.get(url)
    return client.cookies["csrftoken"].value
