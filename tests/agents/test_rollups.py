"""The hourly roll-up of the steps: roll-up plus tail equals counting the steps themselves,
whenever the roll-up ran, across an hour's end, run twice, and for a step committed after its
hour ended; the reads' query counts do not grow with the data; the task is on the beat schedule."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.dashboard import WINDOWS, dashboard_for
from agents.models import Agent, Run, RunStatus, Step
from agents.rollup_models import STEP_BOUNDS_MS, RollupMark, StepHour
from agents.rollup_reads import step_groups
from agents.rollups import GRACE, steps_rollup
from tests.config.test_metrics import samples, scrape
from tests.dashboard_seed import explicit_times

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)
# Latencies on, just over and far past the bounds.
LATENCIES = (0, 5, 6, 100, 2500, 60_000, 60_001)


def le_of(ms: int) -> int:
    return next((i for i, bound in enumerate(STEP_BOUNDS_MS) if ms <= bound), len(STEP_BOUNDS_MS))


def run_at(agent: Agent, at: datetime) -> Run:
    with explicit_times():
        return Run.objects.create(agent=agent, status=RunStatus.SUCCEEDED, created_at=at, finished_at=at)


def steps_at(run: Run, at: datetime, *, latencies=LATENCIES, model: str = "gpt-4o-mini") -> None:
    first = Step.objects.filter(run=run).count()
    with explicit_times():
        Step.objects.bulk_create(
            Step(
                run=run,
                index=first + i,
                kind=Step.Kind.REASONING if i % 2 == 0 else Step.Kind.OBSERVATION,
                model=model if i % 2 == 0 else "",
                latency_ms=ms,
                prompt_tokens=100 + i,
                completion_tokens=10 + i,
                cost=Decimal("0.000123") * (i + 1),
                created_at=at,
            )
            for i, ms in enumerate(latencies)
        )


def direct(**filters) -> dict[tuple, list]:
    """Per (agent, kind, model, latency bucket): count, latency, prompt, completion, cost of the steps."""
    out: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, 0, Decimal(0)])
    for step in Step.objects.filter(**filters).select_related("run"):
        group = out[step.run.agent_id, step.kind, step.model, le_of(step.latency_ms)]
        for i, value in enumerate((1, step.latency_ms, step.prompt_tokens, step.completion_tokens, step.cost)):
            group[i] += value
    return dict(out)


def read(**kwargs) -> dict[tuple, list]:
    out: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, 0, Decimal(0)])
    for row in step_groups(group_by=["by_agent", "by_kind", "by_model", "by_le"], **kwargs):
        group = out[row["by_agent"], row["by_kind"], row["by_model"], row["by_le"]]
        for i, name in enumerate(("n", "latency", "prompt", "completion")):
            group[i] += row[name]
        group[4] += Decimal(row["spent"]).quantize(Decimal("0.000001"))
    return dict(out)


@pytest.fixture
def agents(db):
    return [Agent.objects.create(slug=slug, name=slug, objective="x", scope="x") for slug in ("a", "b")]


def closed_hours(now: datetime) -> int:
    """The hours of ``history`` a roll-up at ``now`` counts: from the oldest step's hour to the
    last hour that ended ``GRACE`` before ``now`` (29 or 30, by how far into its hour ``now`` is)."""
    hour = lambda moment: moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)  # noqa: E731
    return int((hour(now - GRACE) - hour(now - 30 * HOUR)) / HOUR)


@pytest.fixture
def history(agents):
    """Steps of two agents in each of the last 30 hours and in the current one."""
    now = timezone.now()
    for back in range(31):
        for agent in agents:
            at = now - back * HOUR
            steps_at(run_at(agent, at), at, latencies=LATENCIES[: 1 + back % len(LATENCIES)])
    return now


def test_roll_up_plus_tail_is_the_direct_count(client, history):
    families_before = scrape(client)
    dashboards_before = {key: dashboard_for(window=window, now=history) for key, window in WINDOWS.items()}
    assert read() == direct()

    done = steps_rollup(now=history)

    assert done["rollup_hours"] == closed_hours(history) and done["rollup_rows"] > 0
    through = RollupMark.objects.get(name="steps").through
    assert through == (history - GRACE).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    assert Step.objects.filter(created_at__gte=through).exists()  # the current hour is still the tail's
    assert read() == direct()
    # The rolled-up part alone: what the hours before the watermark hold.
    rolled = Counter()
    for row in StepHour.objects.all():
        rolled[row.agent_id, row.kind, row.model, row.bucket] += row.steps
    assert rolled == Counter({key: v[0] for key, v in direct(created_at__lt=through).items()})
    # /metrics and the dashboard show the very same numbers as before the roll-up.
    families_after = scrape(client)
    for family in ("countersign_step_duration_seconds", "countersign_model_tokens", "countersign_model_cost_usd"):
        assert families_after[family] == families_before[family], family
    for key, window in WINDOWS.items():
        before, after = dashboards_before[key], dashboard_for(window=window, now=history)
        assert [(b.total, b.cumulative) for b in after.latency] == [(b.total, b.cumulative) for b in before.latency]
        assert [s.latency for s in after.agents] == [s.latency for s in before.agents]
    assert (
        sum(b.total for b in dashboards_before["24h"].latency)
        == Step.objects.filter(created_at__gte=dashboards_before["24h"].since).count()
    )


def test_an_hour_is_rolled_up_once_its_grace_has_passed_and_its_end_is_the_cut(agents):
    ten = datetime(2026, 3, 10, 10, tzinfo=UTC)
    run = run_at(agents[0], ten)
    steps_at(run, ten + HOUR - timedelta(microseconds=1), latencies=[7])  # the last instant of 10:00
    steps_at(run, ten + HOUR, latencies=[70])  # the first of 11:00

    assert steps_rollup(now=ten + HOUR + GRACE - timedelta(seconds=1))["rollup_rows"] == 0
    assert not StepHour.objects.exists()
    steps_rollup(now=ten + HOUR + GRACE)

    (row,) = StepHour.objects.all()
    assert (row.hour, row.steps, row.latency_ms, row.bucket) == (ten, 1, 7, le_of(7))
    assert RollupMark.objects.get(name="steps").through == ten + HOUR
    assert read() == direct()
    assert read(since=ten + HOUR, until=ten + 2 * HOUR) == direct(created_at__gte=ten + HOUR)
    assert read(since=ten, until=ten + HOUR) == direct(created_at__lt=ten + HOUR)


def test_a_second_run_changes_nothing(history):
    steps_rollup(now=history)
    rows = sorted(StepHour.objects.values_list("hour", "agent_id", "kind", "model", "bucket", "steps", "cost"))
    mark = RollupMark.objects.get(name="steps").through

    assert steps_rollup(now=history) == {"rollup_hours": 0, "rollup_rows": 0}
    assert steps_rollup(now=history - timedelta(minutes=1))["rollup_rows"] == 0  # a copy with a late clock
    assert sorted(StepHour.objects.values_list("hour", "agent_id", "kind", "model", "bucket", "steps", "cost")) == rows
    assert RollupMark.objects.get(name="steps").through == mark
    assert read() == direct()


def test_a_step_committed_after_its_hour_ended_is_counted(agents):
    """A step's time is taken before its transaction commits: one stamped 10:59:59 that commits at
    11:04 is in the roll-up of 10:00, which waits for the grace."""
    ten = datetime(2026, 3, 10, 10, tzinfo=UTC)
    run = run_at(agents[0], ten)
    steps_at(run, ten + timedelta(minutes=30), latencies=[1])
    steps_rollup(now=ten + HOUR + timedelta(minutes=3))  # within the grace: 10:00 waits
    steps_at(run, ten + HOUR - timedelta(seconds=1), latencies=[2, 3])  # committed at 11:04
    steps_rollup(now=ten + HOUR + GRACE + timedelta(minutes=1))

    assert StepHour.objects.get(hour=ten, kind=Step.Kind.REASONING).steps == 2
    assert read() == direct() and sum(group[0] for group in read().values()) == 3
    # Later steps of the same run, in later hours, go to their own hours.
    steps_at(run, ten + 2 * HOUR, latencies=[4])
    steps_rollup(now=ten + 3 * HOUR + GRACE)
    assert set(StepHour.objects.values_list("hour", flat=True)) == {ten, ten + 2 * HOUR}
    assert read() == direct()


def test_counters_stay_equal_to_the_steps_while_the_roll_up_advances(client, agents):
    """Scrape, add steps, roll up, scrape: the step counts never go down and always equal the table."""
    seen = 0.0
    start = timezone.now() - 6 * HOUR
    for hour in range(6):
        at = start + hour * HOUR
        steps_at(run_at(agents[hour % 2], at), at)
        if hour % 2:
            steps_rollup(now=at)
        name = "countersign_step_duration_seconds"
        total = sum(samples(scrape(client), name, f"{name}_count", "agent", "kind").values())
        assert total == Step.objects.count() > seen
        seen = total


def test_the_reads_take_as_many_queries_for_many_steps_as_for_few(client, agents, operator):
    client.force_login(operator)
    now = timezone.now()
    steps_at(run_at(agents[0], now), now, latencies=[1])
    steps_rollup(now=now)

    def counts() -> tuple[int, int, int]:
        with CaptureQueriesContext(connection) as scraped:
            assert client.get("/metrics").status_code == 200
        with CaptureQueriesContext(connection) as page:
            assert client.get("/dashboard/").status_code == 200
        with CaptureQueriesContext(connection) as read_only:
            dashboard_for(window=WINDOWS["7d"], now=now)
        return len(scraped), len(page), len(read_only)

    few = counts()
    for back in range(48):
        at = now - back * HOUR
        steps_at(run_at(agents[back % 2], at), at)
    steps_rollup(now=now)
    for back in range(3):
        steps_at(run_at(agents[1], now - back * timedelta(minutes=1)), now)
    assert counts() == few


def test_the_roll_up_is_on_the_beat_schedule(history):
    from agents.tasks import rollup
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["rollup"]
    assert entry["task"] == "agents.tasks.rollup" == rollup.name
    assert entry["options"]["expires"] == entry["schedule"] <= 3600
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    assert rollup.apply().get()["rollup_hours"] == closed_hours(timezone.now())
    assert RollupMark.objects.get(name="steps").through > history - HOUR - GRACE
    assert rollup.apply().get() == {"rollup_hours": 0, "rollup_rows": 0}
    assert read() == direct()


def test_a_run_of_a_rolled_up_hour_that_ends_later_is_counted_where_it_belongs(client, agents):
    """Runs are counted live (an open run can still change): one started in an hour whose steps are
    rolled up, ending after that roll-up, shows its end in its creation hour and in the counters,
    and its last step in the hour the step was written."""
    now = timezone.now()
    started = now - 3 * HOUR
    with explicit_times():
        run = Run.objects.create(agent=agents[0], status=RunStatus.WAITING, created_at=started)
    steps_at(run, started, latencies=[7])
    steps_rollup(now=now)
    assert StepHour.objects.filter(agent=agents[0]).exists()
    before = dashboard_for(window=WINDOWS["24h"], now=now)
    position = before.buckets.index(started.replace(minute=0, second=0, microsecond=0))
    assert before.runs["in_progress"][position] == 1 and before.runs["succeeded"][position] == 0

    steps_at(run, now, latencies=[70])  # its last step, now
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=now)

    after = dashboard_for(window=WINDOWS["24h"], now=now)
    assert after.runs["in_progress"][position] == 0 and after.runs["succeeded"][position] == 1
    assert after.latency[position].total == 1 and after.latency[-1].total == 1
    families = scrape(client)
    ended = samples(families, "countersign_runs", "countersign_runs_total", "agent", "outcome")
    assert ended == {("a", "succeeded"): 1}
    name = "countersign_step_duration_seconds"
    assert sum(samples(families, name, f"{name}_count", "agent", "kind").values()) == Step.objects.count() == 2
    assert read() == direct()
