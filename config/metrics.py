"""The Prometheus metrics, computed from the database at scrape time.

Every web and worker process writes its facts into the database (runs, steps, tool calls,
approval requests, guardrail hits), so any process that answers a scrape reports the same
numbers: no per-process counters, no multiprocess directory. Counters count rows that have
reached an end (a finished run, a tool call that ended), so they only grow while rows are kept;
histograms are bucket counts of stored durations. Each family is one grouped query; agents are
named by slug from one more query, so no family joins the agent table. The steps, the largest
table, are read from their hourly roll-up plus the steps of the hours not rolled up yet
(``agents.rollup_reads``): the same counts as the steps themselves, from fewer rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any

from django.db.models import Count, DurationField, Expression, ExpressionWrapper, F, Min, Q, QuerySet, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agents.models import (
    TERMINAL_RUN_STATUSES,
    Agent,
    GuardrailHitRecord,
    Run,
    RunStatus,
    Step,
    ToolCall,
    ToolCallStatus,
)
from agents.rollup_models import STEP_BOUNDS_MS
from agents.rollup_reads import step_groups
from approvals.models import ApprovalRequest, ApprovalStatus
from audit.selectors import audit_backlog
from config.websocket_count import websocket_connections

logger = logging.getLogger(__name__)

# Upper bounds in seconds.
RUN_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
STEP_BUCKETS = tuple(bound / 1000 for bound in STEP_BOUNDS_MS)  # 0.005 ... 60, as the roll-up counts them
TOOL_CALL_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DECISION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 4 * 3600, 8 * 3600, 24 * 3600)

# The ends of a tool call: what countersign_tool_calls_total counts.
TOOL_CALL_ENDS = (
    ToolCallStatus.SUCCEEDED,
    ToolCallStatus.FAILED,
    ToolCallStatus.UNKNOWN,
    ToolCallStatus.REJECTED,
    ToolCallStatus.BLOCKED,
    ToolCallStatus.SUGGESTED,
)
# The outcome label of a decided approval request, by status; "approved" splits into approved
# (unchanged) and edited, and "created" and "escalated" are counted besides the outcome.
APPROVAL_OUTCOMES: dict[str, str] = {
    ApprovalStatus.APPROVED: "approved",
    ApprovalStatus.REJECTED: "rejected",
    ApprovalStatus.EXPIRED: "expired",
    ApprovalStatus.CANCELLED: "cancelled",
    ApprovalStatus.ANSWERED: "answered",
    ApprovalStatus.DONE: "done",
    ApprovalStatus.DISMISSED: "dismissed",
    ApprovalStatus.REVIEWED_OK: "reviewed_ok",
    ApprovalStatus.FLAGGED: "flagged",
}
ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)


@dataclass(frozen=True)
class Measure:
    """A stored duration as SQL sees it: the expression, a bound in its unit, its sum in seconds."""

    expression: Expression | F
    bound: Callable[[float], Any]
    seconds: Callable[[Any], float]


def milliseconds(field: str) -> Measure:
    return Measure(F(field), lambda seconds: round(seconds * 1000), lambda total: (total or 0) / 1000)


def between(start: str, end: str) -> Measure:
    return Measure(
        ExpressionWrapper(F(end) - F(start), output_field=DurationField()),
        lambda seconds: timedelta(seconds=seconds),
        lambda total: total.total_seconds() if total else 0.0,
    )


def histogram(
    name: str,
    documentation: str,
    *,
    queryset: QuerySet[Any],
    group_by: Sequence[str],
    labels: Sequence[str],
    label_values: Callable[[dict[str, Any]], Sequence[str]],
    measure: Measure,
    buckets: Sequence[float],
) -> HistogramMetricFamily:
    """One grouped query: per group its count, its sum and a count at or below each bound
    (Prometheus buckets are cumulative, as ``<=`` counts are)."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    aggregates: dict[str, Any] = {
        f"le_{index}": Count("pk", filter=Q(measured__lte=measure.bound(bound))) for index, bound in enumerate(buckets)
    }
    rows = (
        queryset.order_by()
        .alias(measured=measure.expression)
        .values(*group_by)
        .annotate(n=Count("pk"), total=Sum("measured"), **aggregates)
    )
    for row in rows:
        # floatToGoString: the le labels prometheus_client's own histograms carry ("1.0", "0.005").
        counts = [(floatToGoString(bound), row[f"le_{index}"]) for index, bound in enumerate(buckets)]  # type: ignore[no-untyped-call]
        family.add_metric(
            list(label_values(row)), buckets=[*counts, ("+Inf", row["n"])], sum_value=measure.seconds(row["total"])
        )
    return family


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        slugs: dict[int, str] = dict(Agent.objects.values_list("pk", "slug"))

        def slug(agent_id: int | None) -> str:
            return slugs.get(agent_id, "") if agent_id is not None else ""

        yield from self._runs(slug)
        yield from self._steps(slug)
        yield from self._tool_calls(slug)
        yield from self._approvals(slug, slugs)
        yield from self._guardrails(slug)
        yield from self._audit()
        yield from self._websockets()

    def _runs(self, slug: Callable[[int | None], str]) -> Iterable[Metric]:
        total = CounterMetricFamily("countersign_runs", "Runs that ended, by outcome.", labels=["agent", "outcome"])
        active = GaugeMetricFamily(
            "countersign_runs_active", "Runs not ended yet, by status.", labels=["agent", "status"]
        )
        for row in Run.objects.order_by().values("agent_id", "status").annotate(n=Count("pk")):
            if row["status"] in TERMINAL_RUN_STATUSES:
                total.add_metric([slug(row["agent_id"]), row["status"]], row["n"])
            elif row["status"] in ACTIVE_RUN_STATUSES:
                active.add_metric([slug(row["agent_id"]), row["status"]], row["n"])
        yield total
        yield active
        yield histogram(
            "countersign_run_duration_seconds",
            "Runs that ended, from creation to end (waits for people included).",
            queryset=Run.objects.filter(status__in=TERMINAL_RUN_STATUSES, finished_at__isnull=False),
            group_by=["agent_id"],
            labels=["agent"],
            label_values=lambda row: [slug(row["agent_id"])],
            measure=between("created_at", "finished_at"),
            buckets=RUN_BUCKETS,
        )

    def _steps(self, slug: Callable[[int | None], str]) -> Iterable[Metric]:
        """The step histogram and the model usage (tokens, cost): one read of the hourly roll-up and the tail."""
        latency: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(STEP_BOUNDS_MS) + 1))
        sums: dict[tuple[str, str], int] = defaultdict(int)
        usage: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
        for row in step_groups(group_by=["by_agent", "by_kind", "by_model", "by_le"]):
            agent, kind = slug(row["by_agent"]), row["by_kind"]
            latency[agent, kind][row["by_le"]] += row["n"]
            sums[agent, kind] += row["latency"] or 0
            if kind == Step.Kind.REASONING and row["by_model"]:
                used = usage[agent, row["by_model"]]
                used[0] += row["prompt"] or 0
                used[1] += row["completion"] or 0
                used[2] += Decimal(row["spent"] or 0)
        family = HistogramMetricFamily(
            "countersign_step_duration_seconds",
            "Steps by kind: a reasoning step's model call, a tool call's checkpoint, an observation's "
            "tool execution, a decision's application.",
            labels=["agent", "kind"],
        )
        for (agent, kind), counts in sorted(latency.items()):
            cumulative = list(accumulate(counts))
            buckets = [(floatToGoString(b), c) for b, c in zip(STEP_BUCKETS, cumulative, strict=False)]  # type: ignore[no-untyped-call]
            family.add_metric(
                [agent, kind], buckets=[*buckets, ("+Inf", cumulative[-1])], sum_value=sums[agent, kind] / 1000
            )
        yield family
        tokens = CounterMetricFamily(
            "countersign_model_tokens", "Model tokens, prompt and completion.", labels=["agent", "model", "direction"]
        )
        cost = CounterMetricFamily(
            "countersign_model_cost_usd", "What the model calls cost, in US dollars.", labels=["agent", "model"]
        )
        for (agent, model), (prompt, completion, spent) in sorted(usage.items()):
            tokens.add_metric([agent, model, "prompt"], prompt)
            tokens.add_metric([agent, model, "completion"], completion)
            # To the column's places: SQLite sums decimals as floats.
            cost.add_metric([agent, model], float(spent.quantize(Decimal("0.000001"))))
        yield tokens
        yield cost

    def _tool_calls(self, slug: Callable[[int | None], str]) -> Iterable[Metric]:
        total = CounterMetricFamily(
            "countersign_tool_calls", "Tool calls that ended, by status.", labels=["agent", "tool", "status"]
        )
        blocks = CounterMetricFamily(
            "countersign_policy_blocks", "Tool calls the checkpoint policy blocked.", labels=["agent", "tool"]
        )
        rows = (
            ToolCall.objects.order_by()
            .filter(status__in=TOOL_CALL_ENDS)
            .values("run__agent_id", "tool", "status")
            .annotate(n=Count("pk"))
        )
        for row in rows:
            agent = slug(row["run__agent_id"])
            total.add_metric([agent, row["tool"], row["status"]], row["n"])
            if row["status"] == ToolCallStatus.BLOCKED:
                blocks.add_metric([agent, row["tool"]], row["n"])
        yield total
        yield blocks
        yield histogram(
            "countersign_tool_call_duration_seconds",
            "Executed tool calls, retries included.",
            # Claimed by the executor (attempts > 0): a rejected, blocked or answered call never ran.
            queryset=ToolCall.objects.filter(
                attempts__gt=0,
                status__in=[ToolCallStatus.SUCCEEDED, ToolCallStatus.FAILED, ToolCallStatus.UNKNOWN],
            ),
            group_by=["tool"],
            labels=["tool"],
            label_values=lambda row: [row["tool"]],
            measure=milliseconds("latency_ms"),
            buckets=TOOL_CALL_BUCKETS,
        )

    def _approvals(self, slug: Callable[[int | None], str], slugs: dict[int, str]) -> Iterable[Metric]:
        outcomes: dict[tuple[str, str, str], int] = defaultdict(int)
        pending: dict[str, int] = dict.fromkeys(slugs.values(), 0)
        oldest = None
        rows = (
            ApprovalRequest.objects.order_by()
            .values("agent_id", "tool", "status")
            .annotate(
                n=Count("pk"),
                # Approved first: SQLite then reads the row (for its arguments) of the approved
                # requests only, the rest from approval_totals_idx alone.
                edited=Count("pk", filter=Q(status=ApprovalStatus.APPROVED) & Q(decided_arguments__isnull=False)),
                escalated=Count("pk", filter=Q(escalated_at__isnull=False)),
                oldest=Min("created_at"),
            )
        )
        for row in rows:
            agent, tool = slug(row["agent_id"]), row["tool"]
            outcomes[agent, tool, "created"] += row["n"]
            if row["escalated"]:
                outcomes[agent, tool, "escalated"] += row["escalated"]
            if row["status"] == ApprovalStatus.PENDING:
                pending[agent] = pending.get(agent, 0) + row["n"]
                oldest = row["oldest"] if oldest is None else min(oldest, row["oldest"])
            elif row["status"] == ApprovalStatus.APPROVED:
                if row["n"] - row["edited"]:
                    outcomes[agent, tool, "approved"] += row["n"] - row["edited"]
                if row["edited"]:
                    outcomes[agent, tool, "edited"] += row["edited"]
            elif row["status"] in APPROVAL_OUTCOMES:
                outcomes[agent, tool, APPROVAL_OUTCOMES[row["status"]]] += row["n"]
        total = CounterMetricFamily(
            "countersign_approvals",
            "Approval requests: created, escalated, and how they ended (approved unchanged, edited, rejected, "
            "expired, ...).",
            labels=["agent", "tool", "outcome"],
        )
        for labels, count in sorted(outcomes.items()):
            total.add_metric(list(labels), count)
        yield total
        waiting = GaugeMetricFamily(
            "countersign_approvals_pending", "Approval requests waiting for a person.", labels=["agent"]
        )
        for agent, count in sorted(pending.items()):
            waiting.add_metric([agent], count)
        yield waiting
        yield GaugeMetricFamily(
            "countersign_oldest_pending_approval_seconds",
            "Age of the oldest pending approval request (0 when none).",
            value=max((timezone.now() - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )
        yield histogram(
            "countersign_time_to_decision_seconds",
            "From request to a person's decision, by the tool's risk class.",
            queryset=ApprovalRequest.objects.filter(decided_by__isnull=False, decided_at__isnull=False),
            group_by=["agent_id", "risk_class"],
            labels=["agent", "risk"],
            label_values=lambda row: [slug(row["agent_id"]), row["risk_class"]],
            measure=between("created_at", "decided_at"),
            buckets=DECISION_BUCKETS,
        )

    def _guardrails(self, slug: Callable[[int | None], str]) -> Iterable[Metric]:
        hits = CounterMetricFamily("countersign_guardrail_hits", "Guardrail hits, by check.", labels=["agent", "check"])
        rows = GuardrailHitRecord.objects.order_by().values("run__agent_id", "name").annotate(n=Count("pk"))
        for row in rows:
            hits.add_metric([slug(row["run__agent_id"]), row["name"]], row["n"])
        yield hits

    def _audit(self) -> Iterable[Metric]:
        pending, oldest = audit_backlog()
        yield GaugeMetricFamily(
            "countersign_audit_unsealed_events", "Audit events written, not sealed into the chain yet.", value=pending
        )
        yield GaugeMetricFamily(
            "countersign_audit_oldest_unsealed_seconds",
            "Age of the oldest audit event waiting for the sealer (0 when none): the seal lag.",
            value=max((timezone.now() - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )

    def _websockets(self) -> Iterable[Metric]:
        try:
            count = websocket_connections()
        except Exception:
            # Redis down: the other families are still worth a scrape; this one is left out.
            logger.warning("could not read the websocket count from Redis", exc_info=True)
            return
        yield GaugeMetricFamily(
            "countersign_websocket_connections", "Inbox websockets open, over every server process.", value=count
        )
