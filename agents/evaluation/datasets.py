"""Datasets: cases written in YAML, exported by ``export_feedback`` (JSONL), or picked from runs.

YAML is a list of cases (or ``{"cases": [...]}``), each ``{name, input, expected_calls,
expected_outcome}``; an argument written as a bare value means ``{"equal": value}``. An
``export_feedback`` line's ``expected`` becomes the case's expectation with equal matchers on
every argument; its outcome is kept when the agent decides it (succeeded, failed), and not
compared when a person did (rejected, cancelled). Importing adds cases to the named dataset,
made if new; a file with any bad case adds none.
"""

from __future__ import annotations

from typing import Any

import yaml
from django.db.models import Prefetch

from agents.eval_models import Dataset, DatasetCase
from agents.evaluation.matchers import expected_calls_errors, expected_outcome_errors, matcher_from
from agents.feedback_cases import EXPECTED_DECISIONS
from agents.models import TERMINAL_RUN_STATUSES, Agent, Run, RunStatus, ToolCall, ToolCallStatus
from agents.tools import FINAL_ANSWER
from approvals.models import ApprovalRequest
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser, JSONObject
from config.errors import DomainError, JSONRefused
from config.parsing import json_loads_checked, json_value_errors

MAX_CASES = 5000
MAX_FILE_BYTES = 5 * 1024 * 1024
AGENT_OUTCOMES: dict[str, str] = {RunStatus.SUCCEEDED: "succeeded", RunStatus.FAILED: "failed"}


class DatasetInvalid(DomainError):
    pass


def cases_from_yaml(text: str) -> list[JSONObject]:
    _size_check(text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetInvalid(f"The YAML is not valid: {exc}") from None
    if isinstance(data, dict) and set(data) == {"cases"}:
        data = data["cases"]
    if not isinstance(data, list):
        raise DatasetInvalid("A YAML dataset is a list of cases, or {cases: [...]}.")
    cases = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DatasetInvalid(f"case {index + 1}: a case is a mapping")
        unknown = set(entry) - {"name", "input", "expected_calls", "expected_outcome"}
        if unknown:
            raise DatasetInvalid(f"case {index + 1}: unknown keys {', '.join(sorted(map(str, unknown)))}")
        calls = entry.get("expected_calls") or []
        if isinstance(calls, list):
            calls = [_written_call(call) for call in calls]
        cases.append(
            {
                "name": str(entry.get("name") or ""),
                "input": entry.get("input") or {},
                "expected_calls": calls,
                "expected_outcome": _written_outcome(entry.get("expected_outcome")),
                "source": DatasetCase.Source.YAML,
            }
        )
    return cases


def cases_from_jsonl(text: str) -> list[JSONObject]:
    """``export_feedback`` output, one case a line."""
    _size_check(text)
    cases = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json_loads_checked(line)
        except JSONRefused as exc:
            raise DatasetInvalid(f"line {number}: {exc.message}") from None
        expected = entry.get("expected") if isinstance(entry, dict) else None
        if not isinstance(expected, dict) or not isinstance(expected.get("tool_calls"), list):
            raise DatasetInvalid(f'line {number}: not an export_feedback case (no "expected": {{"tool_calls"}})')
        cases.append(
            {
                "name": f"run {entry.get('run')}" if entry.get("run") else "",
                "input": entry.get("input") or {},
                "expected_calls": [_equal_call(call) for call in expected["tool_calls"]],
                "expected_outcome": AGENT_OUTCOMES.get(str(expected.get("outcome"))),
                "source": DatasetCase.Source.FEEDBACK,
            }
        )
    return cases


def cases_from_runs(*, agent: Agent, run_ids: list[int]) -> list[JSONObject]:
    """Cases made of the agent's finished runs: their input, the calls the policy ran or a person
    approved (as approved, edits included), and their outcome."""
    approvals = Prefetch("tool_calls", queryset=ToolCall.objects.select_related("approval").order_by("step"))
    runs = (
        Run.objects.filter(agent=agent, pk__in=run_ids, status__in=list(TERMINAL_RUN_STATUSES))
        .prefetch_related(approvals)
        .order_by("id")
    )
    found = list(runs)
    missing = sorted(set(run_ids) - {run.pk for run in found})
    if missing:
        raise DatasetInvalid(
            f"Not finished runs of {agent.slug}: {', '.join(map(str, missing[:20]))}.", details={"runs": ["unknown"]}
        )
    return [
        {
            "name": f"run {run.pk}",
            "input": run.input,
            "expected_calls": [_equal_call(call) for call in _expected_calls(run)],
            "expected_outcome": AGENT_OUTCOMES.get(run.status),
            "source": DatasetCase.Source.RUN,
            "source_run": run,
        }
        for run in found
    ]


def dataset_import(*, agent: Agent, name: str, cases: list[JSONObject], user: AnyUser | None) -> Dataset:
    """Add ``cases`` to the agent's dataset ``name`` (made if new), all or none."""
    name = name.strip()
    if not name or len(name) > Dataset.NAME_MAX_LENGTH:
        raise DatasetInvalid(f"A dataset's name has 1 to {Dataset.NAME_MAX_LENGTH} characters.")
    if not cases:
        raise DatasetInvalid("No cases to add.")
    if len(cases) > MAX_CASES:
        raise DatasetInvalid(f"At most {MAX_CASES} cases at once, not {len(cases)}.")
    errors = {f"case {i + 1}": problems for i, case in enumerate(cases) if (problems := _case_errors(case))}
    if errors:
        first = next(iter(errors.items()))
        raise DatasetInvalid(f"{first[0]}: {first[1][0]}", details=errors)
    with audited_atomic():
        dataset, made = Dataset.objects.get_or_create(agent=agent, name=name, defaults={"created_by": _user(user)})
        DatasetCase.objects.bulk_create(DatasetCase(dataset=dataset, **case) for case in cases)
        audit_record(
            actor=user,
            action="agents.dataset.imported",
            target=dataset,
            data={"cases": len(cases), "made": made, "sources": sorted({str(c["source"]) for c in cases})},
        )
    return dataset


def _case_errors(case: JSONObject) -> list[str]:
    problems = [f"input {path}: {msg[0]}" for path, msg in json_value_errors(case["input"]).items()]
    if not isinstance(case["input"], dict):
        problems.append("the input is a mapping")
    problems += expected_calls_errors(case["expected_calls"]) + expected_outcome_errors(case["expected_outcome"])
    if len(case["name"]) > 200:
        problems.append("the name has at most 200 characters")
    return problems


def _written_call(call: Any) -> Any:
    if isinstance(call, dict) and isinstance(call.get("arguments"), dict):
        return {**call, "arguments": {field: matcher_from(value) for field, value in call["arguments"].items()}}
    return call


def _written_outcome(outcome: Any) -> Any:
    if isinstance(outcome, dict) and isinstance(outcome.get("answer"), dict):
        return {**outcome, "answer": {field: matcher_from(value) for field, value in outcome["answer"].items()}}
    return outcome


def _equal_call(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    arguments = call.get("arguments") or {}
    if not isinstance(arguments, dict):
        return {"tool": call.get("tool"), "arguments": arguments}
    return {"tool": call.get("tool"), "arguments": {field: {"equal": value} for field, value in arguments.items()}}


def _expected_calls(run: Run) -> list[JSONObject]:
    calls = []
    for call in run.tool_calls.all():
        if call.tool == FINAL_ANSWER:
            continue
        try:
            approval: ApprovalRequest | None = call.approval
        except ApprovalRequest.DoesNotExist:
            approval = None
        if approval is None and call.status not in (ToolCallStatus.BLOCKED, ToolCallStatus.FAILED):
            calls.append({"tool": call.tool, "arguments": call.arguments})
        elif approval is not None and _approved(approval):
            calls.append({"tool": call.tool, "arguments": approval.pending_arguments})
    return calls


def _approved(approval: ApprovalRequest) -> bool:
    # Approved (as proposed or edited), done as suggested, answered, or reviewed ok.
    return approval.status in EXPECTED_DECISIONS


def _size_check(text: str) -> None:
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise DatasetInvalid(f"The file is over {MAX_FILE_BYTES // (1024 * 1024)} MB.")


def _user(user: AnyUser | None) -> Any:
    return user if user is not None and user.is_authenticated else None
