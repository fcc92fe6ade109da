"""Server time of the pages a person opens on a large database: the inbox (API and HTML), the
operator dashboard and a /metrics scrape, read from each response's Server-Timing header.

The floor of each is the same request on the bench's small database, before the 100,000-row
fill; its query count must not change with the fill (a constant number of queries)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.http import Http
from bench.progress import progress
from bench.stats import Goal, Measure


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    goals: tuple[Goal, ...]
    who: str  # "reviewer" (API token and session), "operator" (session) or "" (loopback scrape)
    api: bool = False


PAGES = (
    Page("inbox_page_100k_ms", "/api/v1/approvals/", (Goal("p95", 100),), "reviewer", api=True),
    Page("inbox_html_100k_ms", "/inbox/", (Goal("p95", 100),), "reviewer"),
    Page("dashboard_100k_ms", "/dashboard/", (Goal("p50", 300),), "operator"),
    Page("metrics_100k_ms", "/metrics", (Goal("p50", 200),), ""),
)


@dataclass
class Timed:
    server_ms: list[float]
    queries: set[int]
    status: int


def _client(base_url: str, page: Page, *, token: str, reviewer_cookie: str, operator_cookie: str) -> Http:
    if page.who == "reviewer" and page.api:
        return Http(base_url, token=token)
    if page.who == "reviewer":
        return Http(base_url, cookie=reviewer_cookie)
    if page.who == "operator":
        return Http(base_url, cookie=operator_cookie)
    return Http(base_url)


def page_time(base_url: str, page: Page, *, n: int, **credentials: str) -> Timed:
    client = _client(base_url, page, **credentials)
    timed = Timed(server_ms=[], queries=set(), status=0)
    try:
        for _ in progress(range(n), desc=page.path):
            answer = client.request("GET", page.path)
            timed.status = answer.status
            if answer.status != 200:
                return timed
            if answer.server_ms is None or answer.queries is None:
                raise RuntimeError(f"{page.path} has no Server-Timing header: is COUNTERSIGN_BENCH=1 set?")
            timed.server_ms.append(answer.server_ms)
            timed.queries.add(answer.queries)
    finally:
        client.close()
    return timed


def page_measure(page: Page, *, small: Timed, large: Timed) -> Measure:
    goals = list(page.goals)
    if large.status == 404:
        return Measure.missing(page.name, unit="ms", note="answers 404", goals=goals)
    if large.status != 200:
        raise RuntimeError(f"{page.path} answered {large.status}")
    floor = Measure(name="floor", unit="ms", samples=small.server_ms).value("p50")
    constant = small.queries == large.queries and len(large.queries) == 1
    return Measure(
        name=page.name,
        unit="ms",
        samples=large.server_ms,
        floor=floor,
        goals=goals,
        extra={"queries": sorted(large.queries), "queries_small": sorted(small.queries), "queries_constant": constant},
    )
