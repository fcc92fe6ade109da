"""Reads of the dashboard: runs, cost, step latency and approvals over a window, all agents or one.

Every number is aggregated in SQL (GROUP BY the hour or day of the window a row falls in,
counts with a filter), so the number of queries and the rows they return depend on the window
and the agents, never on how many runs there are. A day is a CASE over the day starts, computed
here in the current time zone, rather than ``Trunc``: on SQLite ``Trunc`` is a Python function
called for every row (over a second for 100,000 runs), a CASE is plain SQL on both databases and
gives the same buckets. An hour is grouped by the start of its UTC hour, cheaper than a CASE of 24
starts, and placed in the bucket that holds it (``agents.dashboard_sql.Buckets``; exact in a time
zone a whole number of hours from UTC, as ``TIME_ZONE`` is). Percentiles come from bucket
counts, with the bounds and the interpolation of Prometheus' ``histogram_quantile`` over the same
buckets /metrics exports (``config.metrics``), so the dashboard and a Grafana panel on the scrape
agree. The steps come from their hourly roll-up plus the steps of the hours not rolled up yet
(``agents.rollup_reads``), an hour's row landing in the bucket that holds its start (whole-hour
time zones again, for the day buckets).

Operators and auditors see every agent (``agents.permissions.agents_visible_to``), and the
dashboard is theirs only (``may_see_dashboard``): the reads take no user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from django.contrib.auth.models import User
from django.db import connections
from django.db.models import (
    Count,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Sum,
)
from django.utils import timezone

from agents.dashboard_sql import Buckets, PerGroup, SecondsBetween, grouping_sets
from agents.models import Agent, Run, RunStatus
from agents.rollup_models import STEP_BOUNDS_MS
from agents.rollup_reads import step_groups
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus
from config.metrics import DECISION_BUCKETS

Unit = Literal["hour", "day"]
# The outcomes of a run as the charts stack them; queued, running and waiting are "in progress".
OUTCOMES: tuple[str, ...] = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.REJECTED,
    RunStatus.CANCELLED,
    "in_progress",
)
# How an approval request (kind "approval") ended: approved unchanged, edited, rejected, expired
# or cancelled with its run (as countersign_approvals' outcome label says).
ENDINGS: tuple[str, ...] = ("approved", "edited", "rejected", "expired", "cancelled")
TOP_STARTERS = 10
# The starters' order, as ``_starters`` orders them (PostgreSQL: NULLs first descending, last ascending).
STARTER_ORDER = 'g."cost" DESC, g."n" DESC, g."username"'
RECENT = 10


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    count: int
    unit: Unit

    def buckets(self, *, now: datetime) -> list[datetime]:
        """The starts of the window's hours or days, oldest first; the last one holds ``now``."""
        local = timezone.localtime(now)
        if self.unit == "hour":
            # Counted back in UTC: an hour is an hour across a change of the clocks.
            last = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
            return [timezone.localtime(last - timedelta(hours=back)) for back in range(self.count - 1, -1, -1)]
        today = local.date()
        days = [today - timedelta(days=back) for back in range(self.count - 1, -1, -1)]
        return [timezone.make_aware(datetime.combine(day, datetime.min.time())) for day in days]

    def end(self, *, now: datetime) -> datetime:
        """The end of the bucket that holds ``now``: the window's rows are before it."""
        return timezone.localtime(now).replace(minute=0, second=0, microsecond=0) + timedelta(
            hours=1 if self.unit == "hour" else 24 - timezone.localtime(now).hour
        )


WINDOWS: dict[str, Window] = {
    "24h": Window("24h", "24 hours", 24, "hour"),
    "7d": Window("7d", "7 days", 7, "day"),
    "30d": Window("30d", "30 days", 30, "day"),
}
DEFAULT_WINDOW = "24h"


def bucket_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[int], total: int) -> float | None:
    """Prometheus' ``histogram_quantile``: the bucket that holds rank ``q * total``, interpolated
    linearly inside it; past the last bound, the last bound. ``None`` with no observations."""
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            inside = count - below
            return float(bound) if inside == 0 else lower + (bound - lower) * (rank - below) / inside
        lower, below = float(bound), count
    return float(bounds[-1])


def rate(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


@dataclass
class Latency:
    """Cumulative counts at or under each of ``STEP_BOUNDS_MS``, and the total."""

    total: int = 0
    cumulative: list[int] = field(default_factory=lambda: [0] * len(STEP_BOUNDS_MS))

    def add(self, row: dict[str, Any]) -> None:
        """Add a group of ``row["n"]`` steps in latency bucket ``row["by_le"]`` (past the last bound:
        counted in the total only)."""
        self.total += row["n"]
        self.cumulative = [have + (row["n"] if i >= row["by_le"] else 0) for i, have in enumerate(self.cumulative)]

    def quantile(self, q: float) -> float | None:
        return bucket_quantile(q, STEP_BOUNDS_MS, self.cumulative, self.total)


@dataclass
class AgentSummary:
    agent: Agent
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    cost: Decimal = Decimal(0)
    endings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDINGS, 0))
    escalated: int = 0
    pending: int = 0
    oldest_pending: datetime | None = None
    latency: Latency = field(default_factory=Latency)

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())

    @property
    def ended(self) -> int:
        return sum(self.endings.values())

    def ending_rate(self, ending: str) -> float | None:
        return rate(self.endings[ending], self.ended)

    @property
    def cost_per_run(self) -> Decimal | None:
        return self.cost / self.total_runs if self.total_runs else None


@dataclass
class Starter:
    username: str
    runs: int
    cost: Decimal

    @property
    def cost_per_run(self) -> Decimal:
        return self.cost / self.runs if self.runs else Decimal(0)


@dataclass
class Dashboard:
    window: Window
    buckets: list[datetime]
    since: datetime
    agents: list[AgentSummary]
    runs: dict[str, list[int]]
    cost: list[Decimal]
    latency: list[Latency]
    endings: dict[str, list[int]]
    decision_times: list[int]
    starters: list[Starter]

    @property
    def total_runs(self) -> int:
        return sum(sum(counts) for counts in self.runs.values())

    @property
    def total_cost(self) -> Decimal:
        return sum(self.cost, Decimal(0))

    @property
    def pending(self) -> int:
        return sum(summary.pending for summary in self.agents)

    @property
    def latency_all(self) -> Latency:
        merged = Latency()
        for bucket in self.latency:
            merged.total += bucket.total
            merged.cumulative = [a + b for a, b in zip(merged.cumulative, bucket.cumulative, strict=True)]
        return merged


def _outcome(status: str) -> str:
    return status if status in OUTCOMES else "in_progress"


def _ending(row: dict[str, Any]) -> list[tuple[str, int]]:
    # An approved request counts as approved here; the edited ones move over in dashboard_for.
    status, n = row["status"], row["n"]
    return [(status, n)] if status in ENDINGS else []


def _scoped(queryset: QuerySet[Any], agent: Agent | None, path: str) -> QuerySet[Any]:
    return queryset.filter(**{path: agent.pk}) if agent is not None else queryset


def dashboard_for(*, window: Window, agent: Agent | None = None, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard shows for ``window``, of every agent or only of ``agent``:
    nine queries (eight with ``agent``, whose row the caller has; one fewer on PostgreSQL), whatever
    the data."""
    now = now or timezone.now()
    buckets = window.buckets(now=now)
    since, until = buckets[0], window.end(now=now)
    # Bounded on both sides: SQLite's planner counts a two-sided range as selective and reads the
    # window through the created_at index instead of walking a whole table by agent.
    in_window = {"created_at__gte": since, "created_at__lt": until}
    agents = [agent] if agent is not None else list(Agent.objects.order_by("name", "slug"))
    summaries = {item.pk: AgentSummary(agent=item) for item in agents}
    result = Dashboard(
        window=window,
        buckets=buckets,
        since=since,
        agents=list(summaries.values()),
        runs={outcome: [0] * len(buckets) for outcome in OUTCOMES},
        cost=[Decimal(0)] * len(buckets),
        latency=[Latency() for _ in buckets],
        endings={ending: [0] * len(buckets) for ending in ENDINGS},
        decision_times=[],
        starters=[],
    )

    slots = Buckets(buckets, hourly=window.unit == "hour")

    def place(row: dict[str, Any], agent_key: str = "agent_id") -> tuple[int | None, AgentSummary | None]:
        return slots.position(row["bucket"]), summaries.get(row[agent_key])

    runs = _scoped(Run.objects.filter(**in_window), agent, "agent_id")
    run_rows, result.starters = _runs_and_starters(runs, slots)
    for row in run_rows:
        position, summary = place(row)
        outcome, cost = _outcome(row["status"]), row["cost"] or Decimal(0)
        if position is not None:
            result.runs[outcome][position] += row["n"]
            result.cost[position] += cost
        if summary is not None:
            summary.runs[outcome] += row["n"]
            summary.cost += cost

    for row in _step_rows(slots, since=since, until=until, agent=agent):
        position, summary = slots.position(row["by_window"]), summaries.get(row["by_agent"])
        if position is not None:
            result.latency[position].add(row)
        if summary is not None:
            summary.latency.add(row)

    requests = _scoped(ApprovalRequest.objects.filter(**in_window), agent, "agent_id")
    approvals = requests.filter(kind=ApprovalKind.APPROVAL)
    edited = [(row, [("approved", -row["n"]), ("edited", row["n"])]) for row in _edited_rows(approvals, slots)]
    for row, endings in [*((row, _ending(row)) for row in _approval_rows(approvals, slots)), *edited]:
        position, summary = place(row)
        for ending, n in endings:
            if position is not None:
                result.endings[ending][position] += n
            if summary is not None:
                summary.endings[ending] += n
        if summary is not None:
            summary.escalated += row.get("escalated", 0)

    pending = _scoped(ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING), agent, "agent_id")
    for row in pending.order_by().values("agent_id").annotate(n=Count("*"), oldest=Min("created_at")):
        if (summary := summaries.get(row["agent_id"])) is not None:
            summary.pending, summary.oldest_pending = row["n"], row["oldest"]

    result.decision_times = _decision_histogram(requests)
    return result


def _runs_and_starters(runs: QuerySet[Run], slots: Buckets) -> tuple[list[dict[str, Any]], list[Starter]]:
    """The window's runs by agent, bucket and status, and the top starters. On PostgreSQL one pass
    over ``run_window_idx`` groups both ways (``grouping_sets``); elsewhere two queries."""
    name = User.objects.filter(pk=OuterRef("started_by_id")).values("username")[:1]
    bucketed: QuerySet[Any] = runs.order_by().annotate(bucket=slots.of("created_at"))
    if connections[runs.db].vendor != "postgresql":
        rows = bucketed.values("agent_id", "bucket", "status").annotate(n=Count("*"), cost=Sum("cost"))
        return list(rows), _starters(runs, name)
    grouped = bucketed.values("agent_id", "bucket", "status", "started_by_id").annotate(
        n=Count("*"), cost=Sum("cost"), username=PerGroup(name)
    )
    # Run.agent is never NULL: a NULL agent_id is a row of the starters' set.
    both = grouping_sets(grouped, sets=[(1, 2, 3), (4,)], marker="agent_id", ranked=STARTER_ORDER, top=TOP_STARTERS)
    starters = sorted((row for row in both if row["place"] is not None), key=lambda row: row["place"])
    return [row for row in both if row["place"] is None], [_starter(row) for row in starters]


def _step_rows(slots: Buckets, *, since: datetime, until: datetime, agent: Agent | None) -> list[dict[str, Any]]:
    """The window's steps by window bucket, agent and latency bucket: the hourly roll-up and the
    steps not rolled up yet (``agents.rollup_reads``; the watermark, then one query)."""
    window = (slots.of("hour"), slots.of("created_at"))
    return step_groups(
        group_by=["by_window", "by_agent", "by_le"],
        since=since,
        until=until,
        agent_id=agent.pk if agent is not None else None,
        extra={"by_window": window},
    )


def _approval_rows(requests: QuerySet[ApprovalRequest], slots: Buckets) -> QuerySet[Any]:
    return (
        requests.order_by()
        .annotate(bucket=slots.of("created_at"))
        .values("bucket", "agent_id", "status")
        .annotate(n=Count("*"), escalated=Count("escalated_at"))
    )


def _edited_rows(requests: QuerySet[ApprovalRequest], slots: Buckets) -> QuerySet[Any]:
    """The approved requests whose arguments a person edited. Apart from ``_approval_rows``: that
    one reads only columns of ``approval_window_idx`` (every request of the window, from the index
    alone); this one reads the rows of the approved requests only, for their arguments."""
    return (
        requests.filter(status=ApprovalStatus.APPROVED, decided_arguments__isnull=False)
        .order_by()
        .annotate(bucket=slots.of("created_at"))
        .values("bucket", "agent_id")
        .annotate(n=Count("*"))
    )


def _decision_histogram(requests: QuerySet[ApprovalRequest]) -> list[int]:
    """Requests a person decided, by time from request to decision: a count per bucket of
    ``DECISION_BUCKETS`` (not cumulative), and the last one for longer than its last bound."""
    # julianday's doubles carry some microseconds of error: half a millisecond keeps a decision at
    # exactly a bound in that bound's bucket, as the duration comparison of /metrics does.
    # Counts of created_at (never NULL, in approval_decided_idx): read from the index alone.
    counted = "created_at"
    at_most = {
        f"le_{i}": Count(counted, filter=Q(measured__lte=bound + 0.0005)) for i, bound in enumerate(DECISION_BUCKETS)
    }
    row = (
        requests.filter(decided_by__isnull=False, decided_at__isnull=False)
        .order_by()
        .alias(measured=SecondsBetween("created_at", "decided_at"))
        .aggregate(n=Count("*"), **at_most)
    )
    cumulative = [row[f"le_{i}"] for i in range(len(DECISION_BUCKETS))] + [row["n"]]
    return [count - (cumulative[i - 1] if i else 0) for i, count in enumerate(cumulative)]


def _starters(runs: QuerySet[Run], name: QuerySet[Any]) -> list[Starter]:
    # Grouped by the starter's id (read from ``run_window_idx`` alone), then named: the name is
    # looked up once a starter, not joined to every run.
    rows = (
        runs.order_by()
        .values("started_by_id")
        .annotate(n=Count("*"), cost=Sum("cost"), username=PerGroup(name))
        .order_by("-cost", "-n", "username")[:TOP_STARTERS]
    )
    return [_starter(row) for row in rows]


def _starter(row: Mapping[str, Any]) -> Starter:
    return Starter(username=row["username"] or "", runs=row["n"], cost=row["cost"] or Decimal(0))


def agent_recent_failures(*, agent: Agent, since: datetime) -> list[Run]:
    """The agent's latest failed runs in the window, with their starter (one query)."""
    return list(
        Run.objects.filter(agent=agent, status=RunStatus.FAILED, created_at__gte=since)
        .select_related("started_by")
        .only("pk", "agent_id", "status", "error", "cost", "created_at", "finished_at", "started_by__username")
        .order_by("-created_at", "-id")[:RECENT]
    )


def agent_pending_approvals(*, agent: Agent) -> list[ApprovalRequest]:
    """The agent's oldest pending approval requests: the ones waiting longest first."""
    return list(
        ApprovalRequest.objects.filter(agent=agent, status=ApprovalStatus.PENDING)
        .only("pk", "run_id", "agent_id", "kind", "tool", "risk_class", "created_at", "escalated_at", "deadline")
        .order_by("created_at", "id")[:RECENT]
    )
