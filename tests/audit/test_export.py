from __future__ import annotations

import csv
import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.chain import HASHED_FIELDS, chain_hash
from audit.models import AuditEvent
from audit.services import audit_record
from tests.audit.conftest import sealed

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(outsider):
    return sealed(
        audit_record(actor=outsider, action="tests.export.one", data={"amount": "12.50", "note": 'a "quoted", text'}),
        audit_record(actor=None, action="tests.export.two", data={"nested": {"b": 1, "a": [1, 2]}}),
        audit_record(actor="policy", action="tests.export.three"),
    )


def export(**options) -> str:
    out = StringIO()
    call_command("audit_export", stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def test_jsonl_has_one_event_per_line_with_its_hashes(events):
    lines = export(since="2000-01-01", format="jsonl").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["id"] for row in rows] == [event.id for event in events]
    assert rows[0]["actor_repr"] == "outsider" and rows[0]["data"] == {"amount": "12.50", "note": 'a "quoted", text'}
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    # An export can be checked on its own: recompute each hash from the exported fields.
    for row in rows:
        fields = {**row, "created_at": dt.datetime.fromisoformat(row["created_at"])}
        assert chain_hash(prev_hash=row["prev_hash"], fields={k: fields[k] for k in HASHED_FIELDS}) == row["hash"]


def test_csv_has_a_header_and_the_data_as_json(events):
    rows = list(csv.DictReader(StringIO(export(since="2000-01-01", format="csv"))))
    assert [int(row["id"]) for row in rows] == [event.id for event in events]
    assert json.loads(rows[0]["data"]) == events[0].data
    assert rows[2]["actor_repr"] == "policy" and rows[2]["run_id"] == ""
    assert rows[2]["hash"] == events[2].hash


def test_since_and_until_bound_the_export(events):
    later = AuditEvent.objects.get(pk=events[-1].pk).created_at
    just_after = (later + dt.timedelta(microseconds=1)).isoformat()
    assert export(since=just_after) == ""
    only_last = export(since=later.isoformat(), until=just_after)
    assert [json.loads(line)["id"] for line in only_last.splitlines()] == [events[-1].id]
    tomorrow = (timezone.now() + dt.timedelta(days=1)).date().isoformat()
    assert len(export(since="2000-01-01", until=tomorrow).splitlines()) == 3


def test_output_file(events, tmp_path):
    target = tmp_path / "audit.jsonl"
    assert export(since="2000-01-01", output=str(target)) == ""
    assert len(target.read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "2026-02-30", "24/11/2026", ""])
def test_a_bad_since_is_a_clear_error(since):
    with pytest.raises(CommandError, match=r"--since: .* is not an ISO 8601 date or datetime"):
        export(since=since)


def test_until_must_follow_since():
    with pytest.raises(CommandError, match="--until must be later than --since"):
        export(since="2026-11-24", until="2026-11-23")


def test_no_progress_bar_when_stderr_is_not_a_terminal(events):
    err = StringIO()
    call_command("audit_export", since="2000-01-01", stdout=StringIO(), stderr=err)
    assert err.getvalue() == ""


def test_progress_bar_on_a_terminal(events):
    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    err = Terminal()
    out = StringIO()
    call_command("audit_export", since="2000-01-01", stdout=out, stderr=err)
    assert "3/3 100%" in err.getvalue() and "exported 3 events" in err.getvalue()
    assert "100%" not in out.getvalue()


@pytest.mark.parametrize("name", ['=HYPERLINK("http://evil.test")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_csv_cells_cannot_run_as_formulas(name):
    event = audit_record(actor=name, action="tests.export.formula", data={"note": name})
    [row] = list(csv.DictReader(StringIO(export(since="2000-01-01", format="csv"))))
    assert row["actor_repr"] == "'" + name
    assert json.loads(row["data"]) == {"note": name}  # the JSON cell starts with "{": nothing to guard
    # JSON lines are for programs: the value stays exact there.
    [line] = export(since="2000-01-01", format="jsonl").splitlines()
    assert json.loads(line)["actor_repr"] == name == AuditEvent.objects.get(pk=event.pk).actor_repr


def test_csv_leaves_ordinary_cells_alone(events):
    rows = list(csv.DictReader(StringIO(export(since="2000-01-01", format="csv"))))
    assert rows[0]["actor_repr"] == "outsider" and rows[0]["action"] == "tests.export.one"
