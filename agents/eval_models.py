"""Evaluation datasets and their runs: cases with expected calls, and each case's scored result.

Defined beside the engine (agents.evaluation); tables of the agents app, imported by
agents.models so that migrations and the admin find them.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    """A named list of cases for one agent."""

    NAME_MAX_LENGTH = 200

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "name"]
        constraints = [models.UniqueConstraint(fields=["agent", "name"], name="dataset_unique_agent_name")]

    def __str__(self) -> str:
        return f"dataset {self.name} of {self.agent_id}"


class DatasetCase(models.Model):
    """One input, the calls a good run proposes ({tool, arguments: {field: matcher}}, in order)
    and the outcome it should reach (agents.evaluation.matchers)."""

    class Source(models.TextChoices):
        YAML = "yaml"
        FEEDBACK = "feedback"
        RUN = "run"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="cases")
    name = models.CharField(max_length=200, blank=True)
    input = models.JSONField(default=dict)
    expected_calls = models.JSONField(default=list, blank=True)
    # A run status ("succeeded", "failed"), {"status": ..., "answer": {path: matcher}}, or null: not compared.
    expected_outcome = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    source_run = models.ForeignKey("agents.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "id"]

    def __str__(self) -> str:
        return f"case {self.pk} of dataset {self.dataset_id}"


class EvalStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Every allowed move of EvalRun.status, from -> to; only ``agents.evaluation.runs.eval_run_move`` applies them.
EVAL_MOVES: dict[str, frozenset[str]] = {
    EvalStatus.QUEUED: frozenset({EvalStatus.RUNNING, EvalStatus.FAILED}),
    EvalStatus.RUNNING: frozenset({EvalStatus.SUCCEEDED, EvalStatus.FAILED}),
    EvalStatus.SUCCEEDED: frozenset(),
    EvalStatus.FAILED: frozenset(),
}


class EvalRun(models.Model):
    """One evaluation of an agent (its current behaviour, or one of its versions) on a dataset."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="eval_runs")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="eval_runs")
    # The agent version evaluated (its number kept beside it for the pages); null: the agent as it is now.
    version = models.ForeignKey(
        "agents.AgentVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="eval_runs"
    )
    version_number = models.PositiveIntegerField(null=True, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=EvalStatus.choices, default=EvalStatus.QUEUED)
    cases_total = models.PositiveIntegerField(default=0)
    cases_done = models.PositiveIntegerField(default=0)
    aggregates = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"evaluation {self.pk} of {self.agent_id}"

    @property
    def label(self) -> str:
        version = f"v{self.version_number}" if self.version_number is not None else "current"
        return f"#{self.pk} {version}"


class EvalCaseResult(models.Model):
    """What one case did in one evaluation: its proposals with their verdicts, and the score."""

    eval_run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(DatasetCase, on_delete=models.CASCADE, related_name="results")
    passed = models.BooleanField()
    reason = models.TextField(blank=True)
    outcome = models.CharField(max_length=20)
    answer = models.JSONField(null=True, blank=True)
    # [{tool, arguments, verdict, reason, executed}] in the order proposed.
    proposals = models.JSONField(default=list)
    matched = models.PositiveIntegerField(default=0)
    expected = models.PositiveIntegerField(default=0)
    unexpected = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["eval_run", "case"]
        constraints = [models.UniqueConstraint(fields=["eval_run", "case"], name="evalcaseresult_unique_case")]

    def __str__(self) -> str:
        return f"case {self.case_id} in evaluation {self.eval_run_id}: {'pass' if self.passed else 'fail'}"
