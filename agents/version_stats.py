"""Live rates per agent version over a window: what the canary comparison and its guard read.

Runs are counted by the version they ran and created in the window; decisions are the decisions
people made in the window on those runs' requests. Three grouped queries for any number of versions.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum

from agents.models import Run, RunStatus, ToolCall, ToolCallStatus
from approvals.models import Decision, DecisionVerdict

# Verdicts that say no to what was proposed (as approvals.analytics counts them).
REJECTING = (DecisionVerdict.REJECT, DecisionVerdict.DISMISS)


@dataclass(frozen=True)
class VersionRates:
    version_id: int
    runs: int = 0
    failures: int = 0
    cost: Decimal = Decimal("0")
    decisions: int = 0
    rejections: int = 0
    edits: int = 0
    flagged: int = 0
    blocks: int = 0

    @property
    def incidents(self) -> int:
        """Reviews flagged as incidents, and calls the policy blocked."""
        return self.flagged + self.blocks

    @property
    def rejection_rate(self) -> float | None:
        return self.rejections / self.decisions if self.decisions else None

    @property
    def edit_rate(self) -> float | None:
        return self.edits / self.decisions if self.decisions else None

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.runs if self.runs else None

    @property
    def incident_rate(self) -> float | None:
        return self.incidents / self.runs if self.runs else None

    @property
    def cost_per_run(self) -> Decimal | None:
        return (self.cost / self.runs).quantize(Decimal("0.000001")) if self.runs else None

    def as_dict(self) -> dict[str, object]:
        """The evidence an audit row and a webhook carry."""
        return {
            "runs": self.runs,
            "failures": self.failures,
            "decisions": self.decisions,
            "rejections": self.rejections,
            "edits": self.edits,
            "incidents": self.incidents,
            "rejection_rate": self.rejection_rate,
            "edit_rate": self.edit_rate,
            "failure_rate": self.failure_rate,
            "incident_rate": self.incident_rate,
            "cost_per_run": str(self.cost_per_run) if self.cost_per_run is not None else None,
        }


def version_rates(*, version_ids: Collection[int], since: datetime) -> dict[int, VersionRates]:
    """Each version's rates over the runs it ran since ``since`` (a version without any: zeros)."""
    ids = [pk for pk in version_ids if pk is not None]
    runs = {
        row["version"]: row
        for row in Run.objects.filter(version__in=ids, created_at__gte=since)
        .order_by()
        .values("version")
        .annotate(n=Count("pk"), failed=Count("pk", filter=Q(status=RunStatus.FAILED)), cost=Sum("cost"))
    }
    decisions = {
        row["request__run__version"]: row
        for row in Decision.objects.filter(
            request__run__version__in=ids, request__run__created_at__gte=since, created_at__gte=since
        )
        .order_by()
        .values("request__run__version")
        .annotate(
            n=Count("pk"),
            rejected=Count("pk", filter=Q(verdict__in=REJECTING)),
            edited=Count("pk", filter=Q(verdict=DecisionVerdict.EDIT)),
            flagged=Count("pk", filter=Q(verdict=DecisionVerdict.FLAG)),
        )
    }
    blocks = dict(
        ToolCall.objects.filter(run__version__in=ids, run__created_at__gte=since, status=ToolCallStatus.BLOCKED)
        .order_by()
        .values("run__version")
        .annotate(n=Count("pk"))
        .values_list("run__version", "n")
    )
    rates: dict[int, VersionRates] = {}
    empty: dict[str, Any] = {}
    for pk in ids:
        run, decided = runs.get(pk, empty), decisions.get(pk, empty)
        rates[pk] = VersionRates(
            version_id=pk,
            runs=run.get("n", 0),
            failures=run.get("failed", 0),
            cost=run.get("cost") or Decimal("0"),
            decisions=decided.get("n", 0),
            rejections=decided.get("rejected", 0),
            edits=decided.get("edited", 0),
            flagged=decided.get("flagged", 0),
            blocks=blocks.get(pk, 0),
        )
    return rates
