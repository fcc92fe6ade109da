"""The harness of the fault suite: the seed, the counts, and the check after each scenario.

``FAULTS_SEED=N`` repeats a run's choices (which worker is killed when, which verdicts, which
client leaves when); without it a seed is drawn and printed. Timing still varies from run to run:
the seed fixes what the suite does, not when the machine schedules it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.faults.clients import InboxClient, Ledger, LoopThread

LOST_PUSH = "[lost live push] "  # tags a seq a client passed on an open socket without receiving it
SEED = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(1, 10**6))


@dataclass
class Tally:
    """Counts across the suite, for the summary line the README quotes."""

    counts: Counter[str] = field(default_factory=Counter)
    durations: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def summary(self) -> str:
        c = self.counts
        total = sum(self.durations.values())
        return (
            f"faults: seed {SEED}: {len(self.durations)} scenarios in {total:.0f} s; "
            f"{c['kills']} worker kills ({c['group_kills']} whole workers, {c['pool_kills']} pools), "
            f"{c['restarts']} restarts ({c['worker_restarts']} workers, {c['redis_restarts']} Redis, "
            f"{c['postgres_restarts']} PostgreSQL); "
            f"{c['runs']} runs, {c['decisions']} decisions acknowledged; "
            f"{c['websocket_connections']} websocket connections; "
            f"{c['checks']} invariant checks ({c['facts']} facts)"
        )


TALLY = Tally()


class Harness:
    """One scenario's ledger, seeded randomness and end-of-scenario check."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ledger = Ledger()
        self.started = time.monotonic()
        self.report: dict[str, Any] = {}

    def rng(self, label: str = "") -> random.Random:
        return random.Random(f"{SEED}:{self.name}:{label}")

    def kill(self, kind: str) -> None:
        TALLY.add("kills")
        TALLY.add(f"{kind}_kills")

    def restart(self, kind: str) -> None:
        TALLY.add("restarts")
        TALLY.add(f"{kind}_restarts")

    def check(
        self,
        *,
        settle_timeout: float = 60.0,
        stack: Any = None,
        clients: list[InboxClient] | None = None,
        server: Any = None,
        loop: LoopThread | None = None,
    ) -> dict[str, Any]:
        """Wait for the runs to settle, check the invariants (in a child process against ``stack``'s
        database when given), and the inbox of every websocket client after it reconnects."""
        from tests.faults import invariants
        from tests.faults.stack import python_module

        clients = clients or []
        acks = self.ledger.acks()
        if stack is None:
            report = invariants.check(acks, settle_timeout=settle_timeout)
        else:
            output = python_module(
                stack,
                "tests.faults.invariants",
                stdin=json.dumps({"acks": acks, "settle_timeout": settle_timeout}),
                timeout=settle_timeout + 120,
            )
            report = json.loads(output.strip().splitlines()[-1])
        if clients:
            assert server is not None and loop is not None
            self._inbox_check(report, clients, server, loop)
        TALLY.add("checks")
        TALLY.add("facts", report["facts"])
        TALLY.add("runs", len(acks["runs"]))
        TALLY.add("decisions", len(acks["decisions"]))
        TALLY.add("websocket_connections", sum(c.connections for c in clients))
        self.report = report
        print(f"\n[{self.name}] seed {SEED}: {json.dumps(report['stats'], default=str)}")
        print(f"[{self.name}] outcomes: {dict(sorted(self.ledger.outcomes.items()))}")
        violations = report["violations"]
        assert not violations, (
            f"{len(violations)} invariant violations in {self.name} (FAULTS_SEED={SEED} repeats its choices):\n  "
            + "\n  ".join(violations[:40])
        )
        return report

    def _inbox_check(self, report: dict[str, Any], clients: list[InboxClient], server: Any, loop: LoopThread) -> None:
        from agents.models import Agent
        from approvals.models import ApprovalRequest, ApprovalStatus, InboxEvent

        for client in clients:
            target = (
                InboxEvent.objects.filter(agent__slug__in=client.may_review)
                .order_by("-pk")
                .values_list("pk", flat=True)
            ).first() or 0
            caught_up = loop.run(client.resync(server, target), timeout=60)
            report["facts"] += 1
            if not caught_up:
                report["violations"].append(
                    f"websocket {client.name}: reconnected with last_seq but never got seq {target} "
                    f"(has {client.last_seq})"
                )
                continue
            agents = list(Agent.objects.filter(slug__in=client.may_review).values_list("pk", flat=True))
            expected = set(
                ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, agent__in=agents).values_list(
                    "pk", flat=True
                )
            )
            held = client.pending()
            report["facts"] += 1
            if held != expected:
                missed = []
                all_passed = True
                for approval_id in sorted(held ^ expected)[:3]:
                    seqs = list(InboxEvent.objects.filter(approval_id=approval_id).values_list("pk", flat=True))
                    lost = [seq for seq in seqs if seq not in client.seen]
                    # The connection on which the client passed the lost seq, and what it got there.
                    passed = next(
                        ((sent, got) for sent, got in client.history if lost and got and sent < lost[0] < max(got)),
                        None,
                    )
                    all_passed = all_passed and passed is not None
                    missed.append(
                        f"approval {approval_id}: events {seqs}, never received {lost}; the connection that "
                        f"passed it (last_seq sent, seqs received in order): {passed}"
                    )
                # A seq the client passed on an open connection without receiving it: the live push was
                # lost, and no reconnect with last_seq can bring it back.
                tag = LOST_PUSH if all_passed else ""
                report["violations"].append(
                    f"{tag}websocket {client.name}: holds pending {sorted(held - expected)[:10]} that the database "
                    f"does not, misses {sorted(expected - held)[:10]}; {'; '.join(missed)}"
                )
            report["facts"] += 1
            report["violations"].extend(client.problems[:10])
        report["stats"]["websocket"] = {
            "clients": len(clients),
            "connections": sum(c.connections for c in clients),
            "messages": sum(c.messages for c in clients),
            "drops": dict(sum((c.drops for c in clients), Counter())),
            "out_of_order": sum(c.out_of_order for c in clients),
        }

    def finish(self) -> None:
        TALLY.durations[self.name] = time.monotonic() - self.started
