from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from agents.tools import registry


class AutonomyLevel(models.IntegerChoices):
    SUGGEST = 1, "suggest-only"
    PROPOSE = 2, "prepare-and-propose"
    REVIEW_AFTER = 3, "execute-with-review"
    GUARDRAILS = 4, "execute-with-guardrails"
    FULL = 5, "full autonomy"


# What tool_choice may be besides the name of one of the agent's tools.
TOOL_CHOICE_MODES = frozenset({"auto", "required"})


class Agent(models.Model):
    class OnReject(models.TextChoices):
        REPLAN = "replan", "re-plan with the reviewer's reason"
        STOP = "stop", "stop the run"

    class Reasoner(models.TextChoices):
        SCRIPTED = "scripted"
        OPENAI = "openai"

    class ExpiryAction(models.TextChoices):
        REJECT = "reject"
        CANCEL = "cancel"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    objective = models.TextField()
    scope = models.TextField(help_text="What the agent may and may not do; shown to reviewers.")
    input_schema = models.JSONField(default=dict, blank=True, help_text="JSON Schema of a run's input.")
    tools = models.JSONField(default=list, blank=True, help_text="Names of the tools this agent may call.")
    autonomy_level = models.PositiveSmallIntegerField(choices=AutonomyLevel.choices, default=AutonomyLevel.PROPOSE)
    tool_levels = models.JSONField(
        default=dict, blank=True, help_text='Per-tool autonomy overrides, e.g. {"send_email": 3}.'
    )
    reasoner = models.CharField(max_length=20, choices=Reasoner.choices, default=Reasoner.SCRIPTED)
    playbook = models.JSONField(default=dict, blank=True, help_text="Steps of the scripted reasoner.")
    system_prompt = models.TextField(blank=True)
    # The model settings of the openai reasoner; blank or null takes the server's default.
    llm_model = models.CharField(max_length=200, blank=True, help_text="The model to ask; blank: LLM_MODEL.")
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)], help_text="0-2."
    )
    max_tokens = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    tool_choice = models.CharField(
        max_length=100,
        default="auto",
        help_text='"auto", "required" (a tool call every turn), or the name of one tool to call.',
    )
    max_steps = models.PositiveIntegerField(default=20, validators=[MinValueValidator(1)])
    max_cost = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("1.00"))
    max_wall_seconds = models.PositiveIntegerField(default=3600, validators=[MinValueValidator(1)])
    on_reject = models.CharField(max_length=10, choices=OnReject.choices, default=OnReject.REPLAN)
    escalation_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    approval_sla_seconds = models.PositiveIntegerField(default=15 * 60, help_text="Escalate after this long.")
    approval_deadline_seconds = models.PositiveIntegerField(
        default=24 * 3600, help_text="Apply the expiry action after this long."
    )
    expiry_action = models.CharField(max_length=10, choices=ExpiryAction.choices, default=ExpiryAction.REJECT)
    webhook_url = models.URLField(blank=True)
    webhook_secret = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True, help_text="Off is the kill switch: no new runs, running ones stop.")
    current_version = models.ForeignKey("AgentVersion", models.SET_NULL, null=True, blank=True, related_name="+")
    candidate_version = models.ForeignKey("AgentVersion", models.SET_NULL, null=True, blank=True, related_name="+")
    canary_share = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)], help_text="0-100 %")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_agents"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("start_run", "Can start runs of this agent"),
            ("review_agent", "Can review and decide this agent's approvals"),
        ]

    def __str__(self) -> str:
        return self.slug

    behaviour_copy = False  # a run's copy with its version's behaviour (agents.versions): never saved

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.behaviour_copy:
            raise ValueError(f"{self.slug}: a version's behaviour copy is not saved; use agents.versions.")
        super().save(*args, **kwargs)

    def level_for(self, tool_name: str) -> int:
        return int(self.tool_levels.get(tool_name, self.autonomy_level))

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        unknown = [name for name in self.tools if name not in registry]
        if unknown:
            errors.setdefault("tools", []).append(f"Unknown tools: {', '.join(sorted(unknown))}.")
        for tool_name, level in (self.tool_levels or {}).items():
            if tool_name not in self.tools:
                errors.setdefault("tool_levels", []).append(f"{tool_name} is not one of this agent's tools.")
            if not isinstance(level, int) or not 1 <= level <= 5:
                errors.setdefault("tool_levels", []).append(f"{tool_name}: level must be an integer 1-5.")
        levels = {name: self.level_for(name) for name in self.tools if name in registry}
        risky = [name for name, level in levels.items() if level == 5 and not registry[name].low_risk]
        if self.autonomy_level == 5:
            risky = [name for name in self.tools if name in registry and not registry[name].low_risk]
            if risky:
                errors.setdefault("autonomy_level", []).append(
                    "Level 5 needs every tool to be low-risk and reversible; "
                    f"these are not: {', '.join(sorted(risky))}."
                )
        elif risky:
            errors.setdefault("tool_levels", []).append(
                f"Level 5 is allowed only for low-risk reversible tools, not {', '.join(sorted(risky))}."
            )
        if self.tool_choice not in TOOL_CHOICE_MODES and self.tool_choice not in self.tools:
            errors.setdefault("tool_choice", []).append(
                f'Give "auto", "required" or one of this agent\'s tools, not {self.tool_choice!r}.'
            )
        if self.approval_deadline_seconds and self.approval_sla_seconds > self.approval_deadline_seconds:
            errors.setdefault("approval_sla_seconds", []).append("The SLA must not be longer than the deadline.")
        if errors:
            raise ValidationError(errors)


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.CANCELLED})

# Every allowed move of Run.status, from -> to; only ``agents.runtime.status.run_move`` applies them.
RUN_MOVES: dict[str, frozenset[str]] = {
    # A worker takes its lease; the kill switch or a cancel stops a run nobody holds.
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    # Taken over once its lease expired, handed back to the queue (slice end), paused for a
    # person, or ended.
    RunStatus.RUNNING: frozenset({RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.WAITING, *TERMINAL_RUN_STATUSES}),
    # A worker takes the lease to apply a person's decision; or it is stopped while it waits.
    RunStatus.WAITING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    **{status: frozenset() for status in TERMINAL_RUN_STATUSES},
}


class Run(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    version = models.ForeignKey("AgentVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="runs")
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    input = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    step_count = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    # Time spent running (not waiting for people): what the wall-time budget measures.
    active_ms = models.PositiveBigIntegerField(default=0)
    # Server-side PII mapping: placeholders the model sees -> real values tools receive.
    redactions = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        # One agent's runs over a window: the dashboard's agent page and the runs list's agent filter.
        indexes = [
            models.Index(fields=["agent", "created_at"], name="run_agent_created_idx"),
            # The dashboard's runs and starters of a window, /metrics' runs by status: from the index alone.
            models.Index(fields=["created_at", "agent", "status", "cost", "started_by"], name="run_window_idx"),
            models.Index(fields=["status", "agent"], name="run_status_agent_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.agent_id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


class RunFeedback(models.Model):
    """A person's verdict on a finished run: thumbs up or down and, optionally, what it should
    have done. One per user and run; giving it again replaces it (agents.feedback)."""

    class Rating(models.TextChoices):
        UP = "up"
        DOWN = "down"

    CORRECTION_MAX_LENGTH = 4000

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    rating = models.CharField(max_length=4, choices=Rating.choices)
    correction = models.TextField(max_length=CORRECTION_MAX_LENGTH, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "user"], name="runfeedback_unique_user")]

    def __str__(self) -> str:
        return f"feedback {self.rating} on run {self.run_id}"


# What the dashboard and /metrics read of a step: the roll-up's tail is counted from these alone.
STEP_MEASURES = ["created_at", "run", "kind", "model", "latency_ms", "prompt_tokens", "completion_tokens", "cost"]


class Step(models.Model):
    class Kind(models.TextChoices):
        REASONING = "reasoning"
        TOOL_CALL = "tool_call"
        OBSERVATION = "observation"
        DECISION = "decision"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    verdict = models.CharField(max_length=20, blank=True)
    verdict_reason = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    # The model that answered a reasoning step (empty for the scripted reasoner): whose tokens and cost these are.
    model = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="step_unique_index")]
        # A window's steps and the roll-up's tail (agents.rollup_reads) from the index, never the large rows.
        indexes = [models.Index(fields=STEP_MEASURES, name="step_window_idx")]

    def __str__(self) -> str:
        return f"step {self.index} ({self.kind}) of run {self.run_id}"


class ToolCallStatus(models.TextChoices):
    PROPOSED = "proposed"
    AWAITING = "awaiting"
    APPROVED = "approved"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    SUGGESTED = "suggested"


# Every allowed move of ToolCall.status, from -> to; only ``agents.runtime.status.tool_call_move``
# applies them. rejected (by a person), blocked (by the policy), suggested (level 1: a person
# acts), succeeded, failed and unknown (a person must reconcile) are ends.
TOOL_CALL_MOVES: dict[str, frozenset[str]] = {
    ToolCallStatus.PROPOSED: frozenset({ToolCallStatus.AWAITING, ToolCallStatus.APPROVED, ToolCallStatus.BLOCKED}),
    ToolCallStatus.AWAITING: frozenset(
        {ToolCallStatus.APPROVED, ToolCallStatus.REJECTED, ToolCallStatus.SUCCEEDED, ToolCallStatus.SUGGESTED}
    ),
    # Claimed by the executor; a flagged final answer has no effect and ends at once.
    ToolCallStatus.APPROVED: frozenset({ToolCallStatus.EXECUTING, ToolCallStatus.SUCCEEDED, ToolCallStatus.FAILED}),
    ToolCallStatus.EXECUTING: frozenset({ToolCallStatus.SUCCEEDED, ToolCallStatus.FAILED, ToolCallStatus.UNKNOWN}),
    **{
        status: frozenset()
        for status in (
            ToolCallStatus.SUCCEEDED,
            ToolCallStatus.FAILED,
            ToolCallStatus.UNKNOWN,
            ToolCallStatus.REJECTED,
            ToolCallStatus.BLOCKED,
            ToolCallStatus.SUGGESTED,
        )
    },
}


class ToolCall(models.Model):
    """The ledger of side effects: one row per proposed call, unique on (run, step)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tool_calls")
    step = models.PositiveIntegerField(help_text="Index of the step that proposed the call.")
    tool = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict)
    arguments_hash = models.CharField(max_length=64)
    rationale = models.TextField(blank=True)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=10, choices=ToolCallStatus.choices, default=ToolCallStatus.PROPOSED)
    verdict = models.CharField(max_length=20, blank=True)
    verdict_reason = models.TextField(blank=True)
    # Arguments a reviewer approved (possibly edited); the executor runs exactly these.
    approved_hash = models.CharField(max_length=64, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="toolcall_unique_run_step")]
        # /metrics' calls that ended and their durations, from the index alone (config/metrics.py).
        indexes = [models.Index(fields=["status", "tool", "attempts", "latency_ms", "run"], name="toolcall_status_idx")]

    def __str__(self) -> str:
        return f"{self.tool} at step {self.step} of run {self.run_id}"


class GuardrailHitRecord(models.Model):
    """One guardrail hit, at the step that met it: a proposal's arguments (its tool-call step),
    a tool's output (its observation step) or the final answer (its reasoning step)."""

    class Stage(models.TextChoices):
        ARGUMENTS = "arguments"
        OUTPUT = "output"
        FINAL = "final"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="guardrail_hits")
    step = models.PositiveIntegerField(help_text="Index of the step the hit was met at.")
    stage = models.CharField(max_length=10, choices=Stage.choices)
    tool = models.CharField(max_length=100, blank=True)
    name = models.CharField(max_length=100, help_text="The guardrail check, e.g. safety, url_domain.")
    effect = models.CharField(max_length=10, help_text="flag or block")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step", "id"]

    def __str__(self) -> str:
        return f"guardrail {self.name} ({self.effect}) at step {self.step} of run {self.run_id}"


# Tables of this app (its migrations, its admin) defined in modules of their own: the demo tools',
# the idempotency keys', the MCP servers', the roll-ups', the versions' and the evaluations'.
import agents.eval_models  # noqa: E402, F401
from agents.demo.models import KnowledgeArticle, LedgerEntry, OutboxEmail, Ticket, TicketChange  # noqa: E402
from agents.idempotency_models import IdempotencyKey  # noqa: E402
from agents.mcp.models import McpServer, McpTool  # noqa: E402
from agents.rollup_models import RollupMark, StepHour  # noqa: E402
from agents.version_models import AgentVersion  # noqa: E402

__all__ = [
    "RUN_MOVES",
    "TERMINAL_RUN_STATUSES",
    "TOOL_CALL_MOVES",
    "Agent",
    "AgentVersion",
    "AutonomyLevel",
    "GuardrailHitRecord",
    "IdempotencyKey",
    "KnowledgeArticle",
    "LedgerEntry",
    "McpServer",
    "McpTool",
    "OutboxEmail",
    "RollupMark",
    "Run",
    "RunFeedback",
    "RunStatus",
    "Step",
    "StepHour",
    "Ticket",
    "TicketChange",
    "ToolCall",
    "ToolCallStatus",
]
