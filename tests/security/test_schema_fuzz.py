"""The API answers what its OpenAPI schema says, whatever it is sent.

Schemathesis, through its pytest integration, reads the schema the live ASGI server serves at
/api/schema/, generates requests for every operation (the schema's examples, valid and invalid
bodies, queries, headers and path ids) and runs all its checks on every answer: no server error,
only documented statuses, bodies, headers and content types as the schema describes them,
credentials enforced, invalid data refused and valid data accepted. With an operator's token and
with a reviewer's, each over every operation (the operator's kill switches in a test of their
own), and with an auditor's over the audit operations; each time on a database with real
objects: agents, runs waiting at a refund, pending approvals the reviewer may decide. Generated
ids and slugs are replaced by the seeded ones half of the time, so that requests reach the views
and not only their 404.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import requests
import schemathesis
from guardian.shortcuts import assign_perm

from agents.definitions import agent_upsert
from agents.demo.data import SUPPORT_AGENT
from tests.conftest import PASSWORD, grant_tools
from tests.pages import waiting_refund

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

# Examples per operation in the fuzzing phase; the examples phase sends the schema's own, the
# coverage phase one request per boundary and per kind of invalid value. A fixed seed and
# derandomized generation: every run sends the same requests.
MAX_EXAMPLES = 15
SEED = 20261124
# Methods an operation does not take, sent to each for its 405 and Allow header (the coverage
# phase would otherwise send every method to every path).
UNEXPECTED_METHODS = ["DELETE", "PUT"]
# How often a generated path id, slug or bulk id is replaced by a seeded object's.
SEEDED_ID_PROBABILITY = 0.5

# The operations where each principal gets past the permission check, and each must succeed at
# least once. There the coverage phase runs as well; elsewhere the refusal comes before any
# validation and fuzzing is enough. The token endpoint is everyone's and no one's: it allows ten
# attempts a minute (429 beyond), so it is covered with the operator and need not succeed.
OWN_OPERATIONS = {
    "operator": [
        "GET /api/v1/agents/",
        "GET /api/v1/agents/{slug}/",
        "PATCH /api/v1/agents/{slug}/",
        "POST /api/v1/agents/{slug}/runs/",
        "POST /api/v1/agents/emergency-stop/",
        "GET /api/v1/runs/{run_id}/",
        "POST /api/v1/runs/{run_id}/cancel/",
    ],
    "reviewer": [
        "GET /api/v1/approvals/",
        "GET /api/v1/approvals/{approval_id}/",
        "POST /api/v1/approvals/{approval_id}/decision/",
        "POST /api/v1/approvals/decisions/",
    ],
    "auditor": ["GET /api/v1/audit/events/", "GET /api/v1/audit/head/"],
}

# Operations with rules no schema can state, on stored rows or between fields: credentials against
# the users, a run's input against its agent's input_schema, a decision against its approval's kind
# and its tool's arguments schema, a level change against the agent's tools, feedback against its
# run's status (409 until it has finished), an audit window whose since must come before its until.
# A request the schema allows may still get their documented 400 (or 409); every other check
# applies to them as to the rest.
BEYOND_THE_SCHEMA = [
    "POST /api/v1/auth/token/",
    "POST /api/v1/agents/{slug}/runs/",
    "POST /api/v1/approvals/{approval_id}/decision/",
    "PATCH /api/v1/agents/{slug}/",
    "POST /api/v1/runs/{run_id}/feedback/",
    "GET /api/v1/audit/events/",
]
ACCEPTED_BEYOND_THE_SCHEMA = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
# The kill switches stop every run of the agents they hit and refuse new ones: they get a test of
# their own, so that the other operations find the seeded runs still waiting.
KILL_SWITCHES = ["PATCH /api/v1/agents/{slug}/", "POST /api/v1/agents/emergency-stop/"]


@dataclass
class Seeded:
    """What the database holds before the first generated request."""

    token: str
    approval_ids: list[int]
    run_ids: list[int]
    slugs: list[str]


@dataclass
class Tally:
    requests: int = 0
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)


@pytest.fixture
def principal(request) -> str:
    """Whose token the requests carry: each test names it (indirect parametrization)."""
    return request.param


@pytest.fixture
def seeded(
    fresh_asgi_server, doorbells, support_agent, starter, assigned_reviewer, other_reviewer, auditor, principal
) -> Seeded:
    """The support agent with two runs waiting at a refund, started by the operator, so that the
    reviewer may decide them; a second agent only the other reviewer reviews, with a run of its own
    waiting; and the principal's token, from the token endpoint."""
    mine = [waiting_refund(support_agent, starter, amount=amount) for amount in (120, 240)]
    elsewhere_agent, _ = agent_upsert({**SUPPORT_AGENT, "slug": "support-eu", "name": "Support agent (EU)"})
    grant_tools(starter, elsewhere_agent.tools)
    assign_perm("review_agent", other_reviewer, elsewhere_agent)
    approvals = [*mine, waiting_refund(elsewhere_agent, starter)]
    user = {"operator": starter, "reviewer": assigned_reviewer, "auditor": auditor}[principal]
    answer = httpx.post(
        f"{fresh_asgi_server.url}/api/v1/auth/token/",
        json={"username": user.username, "password": PASSWORD},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return Seeded(
        token=answer.json()["token"],
        approval_ids=[a.pk for a in approvals],
        run_ids=[a.run_id for a in approvals],
        slugs=["support", "support-eu", "research"],
    )


def operations_config(principal: str) -> list[dict]:
    own = OWN_OPERATIONS[principal] + (["POST /api/v1/auth/token/"] if principal == "operator" else [])
    entries: list[dict] = [
        {
            "include-name": BEYOND_THE_SCHEMA,
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_BEYOND_THE_SCHEMA}},
        },
        {"exclude-name": own, "phases": {"coverage": {"enabled": False}}},
    ]
    return entries


@pytest.fixture
def api_schema(fresh_asgi_server, seeded, principal):
    known = {
        "approval_ids": seeded.approval_ids,
        "run_ids": seeded.run_ids,
        "slugs": seeded.slugs,
    }
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": fresh_asgi_server.url,
            "headers": {"Authorization": f"Token {seeded.token}"},
            # No NUL in generated text: the API refuses it anywhere in a body (400 invalid_text,
            # config/parsing.py), also in object keys, where no schema keyword can say so.
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none", "allow-x00": False},
            "phases": {"coverage": {"unexpected-methods": UNEXPECTED_METHODS}},
            "request-timeout": 10,
            "dictionaries": {name: {"values": values} for name, values in known.items()},
            "parameters": {
                "path.approval_id": {"dictionary": "approval_ids", "probability": SEEDED_ID_PROBABILITY},
                "path.run_id": {"dictionary": "run_ids", "probability": SEEDED_ID_PROBABILITY},
                "path.slug": {"dictionary": "slugs", "probability": SEEDED_ID_PROBABILITY},
                "body.ids[*]": {"dictionary": "approval_ids", "probability": SEEDED_ID_PROBABILITY},
            },
            "operations": operations_config(principal),
        }
    )
    return schemathesis.openapi.from_url(f"{fresh_asgi_server.url}/api/schema/?format=json", config=config, timeout=10)


@pytest.fixture
def tally(principal, monkeypatch, capsys) -> Iterator[Tally]:
    """Counts every request sent (the checks' own probes included) and every answer to a
    generated one; when all operations are done, each of the principal's own operations must have
    succeeded at least once, or the run proved little beyond refusals."""
    counted = Tally()
    send = requests.Session.send

    def counting_send(self, request, **kwargs):
        counted.requests += 1
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counting_send)
    yield counted
    generated = counted.answers.total()
    with capsys.disabled():
        by_class = Counter({f"{status // 100}xx": 0 for _, status in counted.answers})
        for (_, status), n in counted.answers.items():
            by_class[f"{status // 100}xx"] += n
        print(
            f"\nschemathesis as {principal}: {generated} generated requests, {counted.requests} sent in all "
            f"(with the checks' probes); answers {dict(sorted(by_class.items()))}"
        )
    tried = {operation for operation, _ in counted.answers}
    succeeded = {operation for (operation, status), _ in counted.answers.items() if 200 <= status < 300}
    expected = set(OWN_OPERATIONS[principal]) & tried
    assert expected <= succeeded, sorted(expected - succeeded)


@pytest.fixture(autouse=True)
def node_id_attribute(request) -> None:
    """Schemathesis 4.32 names each operation's subtest by rewriting ``Node._nodeid``, an attribute
    pytest 9.2 no longer has (the id is ``Node._id`` now): give it one to read and write. Reports
    keep the item's own id."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


def call_and_validate(case, seeded: Seeded, tally: Tally) -> None:
    # The principal's token, named as the caller's own: Schemathesis then takes it for explicit
    # credentials (it has a random session cookie generated beside it, which the token outranks).
    response = case.call_and_validate(headers={"Authorization": f"Token {seeded.token}"})
    tally.answers[(f"{case.method} {case.operation.path}", response.status_code)] += 1


@pytest.mark.parametrize("principal", ["operator"], indirect=True)
@schema.exclude(name=KILL_SWITCHES).parametrize()
def test_the_api_answers_an_operator_as_its_schema_says(case, seeded, tally):
    call_and_validate(case, seeded, tally)


@pytest.mark.parametrize("principal", ["operator"], indirect=True)
@schema.include(name=KILL_SWITCHES).parametrize()
def test_the_kill_switches_answer_an_operator_as_the_schema_says(case, seeded, tally):
    call_and_validate(case, seeded, tally)


@pytest.mark.parametrize("principal", ["reviewer"], indirect=True)
@schema.parametrize()
def test_the_api_answers_a_reviewer_as_its_schema_says(case, seeded, tally):
    # A reviewer's kill switches are refused (403) before anything changes: no test of their own.
    call_and_validate(case, seeded, tally)


@pytest.mark.parametrize("principal", ["auditor"], indirect=True)
@schema.include(path_regex="^/api/v1/audit/").parametrize()
def test_the_audit_api_answers_an_auditor_as_its_schema_says(case, seeded, tally):
    call_and_validate(case, seeded, tally)
