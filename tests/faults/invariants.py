"""What must hold after every fault scenario, checked against the database.

``check(acks)`` waits until the runs settle, then checks (each comparison counts as a fact):

1. every run acknowledged with a 201 exists, and every run ended (succeeded, failed, rejected,
   cancelled) or validly waits: for a pending approval, or for a decided one that a worker then
   applies (the wait for the settling gives the workers and the sweeper the time to); a run that
   started was started once (one ``agents.run.started`` audit row, however many doorbells rang);
2. every decision acknowledged with a 200 is in the database (its Decision row, the status the
   answer gave) with exactly one ``approvals.request.decided`` audit row; every approval has as
   many decided rows as Decision rows, exactly one created row, and exactly one end (a final
   decision, an expiry or a cancel) when it is no longer pending, none while it is;
3. no idempotency key has more than one effect: at most one LedgerEntry, OutboxEmail and
   TicketChange per ToolCall.idempotency_key, none for a key no call holds, one for every call
   that succeeded, none for a call that did not run; an effect is of exactly the approved (or
   edited) arguments, and no run applies the same action twice under two keys;
4. the audit chain verifies (``audit_verify``).

Runs in the test process, or as ``python -m tests.faults.invariants`` (acks as JSON on stdin, the
report as JSON on stdout) for a database the test process is not connected to.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

EFFECT_TOOLS = {"issue_refund": "LedgerEntry", "send_email": "OutboxEmail", "update_ticket": "TicketChange"}


def unsettled() -> list[str]:
    """Runs that are neither ended nor validly waiting (yet)."""
    from agents.models import Run, RunStatus, ToolCallStatus
    from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus

    waiting_for_person = set(
        ApprovalRequest.objects.filter(
            status=ApprovalStatus.PENDING, tool_call__status=ToolCallStatus.AWAITING, run__status=RunStatus.WAITING
        )
        .exclude(kind=ApprovalKind.REVIEW)
        .values_list("run_id", flat=True)
    )
    found = []
    for run_id, slug, status, lease in Run.objects.filter(
        status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING]
    ).values_list("pk", "agent__slug", "status", "lease_expires_at"):
        if status == RunStatus.WAITING and run_id in waiting_for_person:
            continue
        why = "waits, but no approval of it is pending" if status == RunStatus.WAITING else f"is {status}"
        found.append(f"run {run_id} ({slug}) {why} (lease until {lease})")
    return found


def settle(timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = unsettled()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class Report:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self.facts = 0
        self.stats: dict[str, Any] = {}

    def fact(self, holds: bool, message: str) -> None:
        self.facts += 1
        if not holds:
            self.violations.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {"violations": self.violations, "facts": self.facts, "stats": self.stats}


def check(acks: dict[str, Any], *, settle_timeout: float = 60.0) -> dict[str, Any]:
    from django.contrib.auth.models import User

    from agents.demo.models import TicketChange
    from agents.models import TERMINAL_RUN_STATUSES, LedgerEntry, OutboxEmail, Run, ToolCall, ToolCallStatus
    from agents.tools import arguments_hash
    from approvals.models import ApprovalRequest, ApprovalStatus, Decision
    from audit.models import AuditEvent

    report = Report()
    started = time.monotonic()
    left = settle(settle_timeout)
    report.stats["settled_in"] = round(time.monotonic() - started, 2)
    for line in left:
        report.fact(False, f"not settled after {settle_timeout:.0f} s: {line}")

    # 1. Runs.
    runs = {pk: (slug, status) for pk, slug, status in Run.objects.values_list("pk", "agent__slug", "status")}
    for run_id in acks.get("runs", {}):
        report.fact(int(run_id) in runs, f"run {run_id} was acknowledged with 201 but is not in the database")
    report.fact(True, "runs settled")  # counted once; the unsettled ones were reported above
    started_rows = Counter(AuditEvent.objects.filter(action="agents.run.started").values_list("run_id", flat=True))
    for run_id, started_at in Run.objects.values_list("pk", "started_at"):
        expected = 0 if started_at is None else 1
        report.fact(
            started_rows[run_id] == expected,
            f"run {run_id} has {started_rows[run_id]} agents.run.started audit rows (started at {started_at})",
        )
    report.stats["runs"] = dict(Counter(status for _, status in runs.values()))
    report.stats["acknowledged_runs"] = len(acks.get("runs", {}))

    # 2. Decisions and the approvals' audit rows.
    usernames = dict(User.objects.values_list("username", "pk"))
    decided_rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    ends: Counter[int] = Counter()
    created: Counter[int] = Counter()
    for action, target_id, actor_id, data in AuditEvent.objects.filter(
        target_type="approvals.approvalrequest"
    ).values_list("action", "target_id", "actor_id", "data"):
        approval_id = int(target_id)
        if action == "approvals.request.decided":
            decided_rows[approval_id].append({"actor": actor_id, "status": (data or {}).get("status")})
            if (data or {}).get("status") != ApprovalStatus.PENDING:
                ends[approval_id] += 1
        elif action in ("approvals.request.expired", "approvals.request.cancelled"):
            ends[approval_id] += 1
        elif action == "approvals.request.created":
            created[approval_id] += 1
    decisions = Counter(Decision.objects.values_list("request_id", "reviewer_id"))
    approvals = {a.pk: a for a in ApprovalRequest.objects.all()}
    for ack in acks.get("decisions", []):
        approval_id, reviewer = int(ack["approval"]), ack["reviewer"]
        user_id = usernames.get(reviewer)
        what = f"the 200 of {reviewer}'s {ack['verdict']} on approval {approval_id}"
        report.fact(
            decisions[(approval_id, user_id)] == 1, f"{what}: {decisions[(approval_id, user_id)]} Decision rows"
        )
        rows = [row for row in decided_rows[approval_id] if row["actor"] == str(user_id)]
        report.fact(len(rows) == 1, f"{what}: {len(rows)} approvals.request.decided audit rows")
        approval = approvals.get(approval_id)
        report.fact(approval is not None, f"{what}: the approval is not in the database")
        if approval is not None and ack.get("status") not in (None, ApprovalStatus.PENDING):
            report.fact(
                approval.status == ack["status"], f"{what} said {ack['status']}, the database {approval.status}"
            )
    for approval_id, approval in approvals.items():
        count = sum(n for (request, _), n in decisions.items() if request == approval_id)
        report.fact(
            len(decided_rows[approval_id]) == count,
            f"approval {approval_id}: {len(decided_rows[approval_id])} decided audit rows, {count} Decision rows",
        )
        report.fact(created[approval_id] == 1, f"approval {approval_id}: {created[approval_id]} created audit rows")
        expected = 0 if approval.status == ApprovalStatus.PENDING else 1
        report.fact(
            ends[approval_id] == expected,
            f"approval {approval_id} is {approval.status} with {ends[approval_id]} ending audit rows",
        )
    report.stats["approvals"] = dict(Counter(a.status for a in approvals.values()))
    report.stats["acknowledged_decisions"] = len(acks.get("decisions", []))

    # 3. Effects: one per idempotency key, of exactly the approved arguments.
    calls = {str(call.idempotency_key): call for call in ToolCall.objects.all()}
    effects: dict[str, Counter[str]] = {
        "LedgerEntry": Counter(LedgerEntry.objects.values_list("idempotency_key", flat=True)),
        "OutboxEmail": Counter(OutboxEmail.objects.values_list("idempotency_key", flat=True)),
        "TicketChange": Counter(TicketChange.objects.values_list("idempotency_key", flat=True)),
    }
    for model, counter in effects.items():
        for key, count in counter.items():
            report.fact(count <= 1, f"idempotency key {key} has {count} {model} rows")
            call = calls.get(key)
            report.fact(call is not None, f"{model} row with key {key}, which no tool call holds")
            if call is not None:
                report.fact(EFFECT_TOOLS.get(call.tool) == model, f"{model} row for a {call.tool} call ({key})")
                report.fact(
                    call.status in (ToolCallStatus.SUCCEEDED, ToolCallStatus.UNKNOWN),
                    f"{model} row for call {call.pk} ({call.tool}), which is {call.status}",
                )
    amounts = dict(LedgerEntry.objects.values_list("idempotency_key", "amount"))
    approved_by_call = {a.tool_call_id: a for a in approvals.values() if a.status == ApprovalStatus.APPROVED}
    per_run: Counter[tuple[int, str, str]] = Counter()
    for key, call in calls.items():
        model = EFFECT_TOOLS.get(call.tool)
        if model is None:
            continue
        has_effect = effects[model][key] > 0
        if call.status == ToolCallStatus.SUCCEEDED:
            report.fact(has_effect, f"call {call.pk} ({call.tool}) succeeded without its {model} row")
        report.fact(
            call.status != ToolCallStatus.UNKNOWN,
            f"call {call.pk} ({call.tool}) of run {call.run_id} ended unknown: a person must reconcile it",
        )
        if not has_effect:
            continue
        per_run[(call.run_id, call.tool, arguments_hash(call.arguments))] += 1
        report.fact(
            call.approved_hash == arguments_hash(call.arguments),
            f"call {call.pk} ran arguments other than the approved ones",
        )
        approval = approved_by_call.get(call.pk)
        if approval is not None:
            intended = approval.decided_arguments if approval.decided_arguments is not None else approval.arguments
            report.fact(call.arguments == intended, f"call {call.pk} ran {call.arguments}, approved was {intended}")
        if model == "LedgerEntry":
            want = Decimal(str(round(float(call.arguments["amount"]), 2)))
            report.fact(amounts[key] == want, f"refund of call {call.pk} is {amounts[key]}, its arguments say {want}")
    for (run_id, tool, _), count in per_run.items():
        report.fact(count == 1, f"run {run_id} applied the same {tool} {count} times under different keys")
    report.stats["effects"] = {model: sum(counter.values()) for model, counter in effects.items()}
    report.stats["calls"] = dict(Counter(call.status for call in calls.values()))

    # 4. The audit chain.
    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out)
        report.fact(True, "audit chain")
    except CommandError as exc:
        report.fact(False, f"audit_verify: {exc}")
    report.stats["audit"] = out.getvalue().strip()
    report.stats["terminal"] = sum(1 for _, status in runs.values() if status in TERMINAL_RUN_STATUSES)
    return report.as_dict()


def main() -> int:
    import django

    django.setup()
    request = json.loads(sys.stdin.read())
    print(json.dumps(check(request["acks"], settle_timeout=request.get("settle_timeout", 60.0)), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
