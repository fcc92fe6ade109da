from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from agents.models import Agent, Run, ToolCall
from agents.tools import arguments_hash
from approvals.rules import rule_errors
from audit.types import JSONObject


class Verdict(models.TextChoices):
    """What the checkpoint policy says of a proposed call."""

    EXECUTE = "execute"
    EXECUTE_AND_REVIEW = "execute_and_review"
    REQUIRE_APPROVAL = "require_approval"
    BLOCK = "block"


class BusinessRule(models.Model):
    class Operator(models.TextChoices):
        GT = ">"
        GTE = ">="
        LT = "<"
        LTE = "<="
        EQ = "=="
        NE = "!="
        IN = "in"
        NOT_IN = "not_in"
        MATCHES = "matches"

    class Effect(models.TextChoices):
        REQUIRE_APPROVAL = "require_approval"
        REQUIRE_TWO_APPROVALS = "require_two_approvals"
        BLOCK = "block"

    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rules",
        help_text="Empty: the rule applies to every agent.",
    )
    tool = models.CharField(max_length=100)
    field = models.CharField(max_length=100, help_text='Argument name; "to:domain" takes the domain of an email.')
    operator = models.CharField(max_length=10, choices=Operator.choices)
    value = models.JSONField(help_text="A number, a string, or a list for in / not_in.")
    effect = models.CharField(max_length=24, choices=Effect.choices)
    note = models.CharField(max_length=300, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tool", "id"]

    def __str__(self) -> str:
        return f"{self.tool}.{self.field} {self.operator} {self.value!r} → {self.effect}"

    def clean(self) -> None:
        errors = rule_errors(tool=self.tool, field=self.field, operator=self.operator, value=self.value)
        if errors:
            raise ValidationError(errors)


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    DONE = "done"
    DISMISSED = "dismissed"
    REVIEWED_OK = "reviewed_ok"
    FLAGGED = "flagged"
    ANSWERED = "answered"


class ApprovalKind(models.TextChoices):
    APPROVAL = "approval", "approve before it runs"
    SUGGESTION = "suggestion", "level-1 suggestion"
    REVIEW = "review", "after-the-fact review"
    QUESTION = "question", "question to a person"


# Every allowed move of ApprovalRequest.status, from -> to; only ``approvals.decisions`` applies
# them. A request is decided once: every status but pending is an end.
APPROVAL_MOVES: dict[str, frozenset[str]] = {
    ApprovalStatus.PENDING: frozenset(set(ApprovalStatus) - {ApprovalStatus.PENDING}),
    **{status: frozenset() for status in ApprovalStatus if status != ApprovalStatus.PENDING},
}


class DecisionVerdict(models.TextChoices):
    """What a person says of an approval request."""

    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"
    RESPOND = "respond"
    DONE = "done"
    DISMISS = "dismiss"
    OK = "ok"
    FLAG = "flag"


# The verdicts each kind of request takes, and the status each verdict ends it in.
KIND_VERDICTS: dict[str, frozenset[DecisionVerdict]] = {
    ApprovalKind.APPROVAL: frozenset({DecisionVerdict.APPROVE, DecisionVerdict.EDIT, DecisionVerdict.REJECT}),
    ApprovalKind.SUGGESTION: frozenset({DecisionVerdict.DONE, DecisionVerdict.DISMISS}),
    ApprovalKind.REVIEW: frozenset({DecisionVerdict.OK, DecisionVerdict.FLAG}),
    ApprovalKind.QUESTION: frozenset({DecisionVerdict.RESPOND, DecisionVerdict.REJECT}),
}
# The verdicts that take nothing but a comment: what bulk decisions (inbox and API) may give.
BULK_VERDICTS: tuple[DecisionVerdict, ...] = (
    DecisionVerdict.APPROVE,
    DecisionVerdict.REJECT,
    DecisionVerdict.DONE,
    DecisionVerdict.DISMISS,
    DecisionVerdict.OK,
    DecisionVerdict.FLAG,
)
VERDICT_STATUS: dict[DecisionVerdict, ApprovalStatus] = {
    DecisionVerdict.APPROVE: ApprovalStatus.APPROVED,
    DecisionVerdict.EDIT: ApprovalStatus.APPROVED,
    DecisionVerdict.REJECT: ApprovalStatus.REJECTED,
    DecisionVerdict.RESPOND: ApprovalStatus.ANSWERED,
    DecisionVerdict.DONE: ApprovalStatus.DONE,
    DecisionVerdict.DISMISS: ApprovalStatus.DISMISSED,
    DecisionVerdict.OK: ApprovalStatus.REVIEWED_OK,
    DecisionVerdict.FLAG: ApprovalStatus.FLAGGED,
}


class ApprovalRequest(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="approvals")
    tool_call = models.OneToOneField(ToolCall, on_delete=models.CASCADE, related_name="approval")
    kind = models.CharField(max_length=12, choices=ApprovalKind.choices, default=ApprovalKind.APPROVAL)
    tool = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict)
    arguments_hash = models.CharField(max_length=64)
    rationale = models.TextField(blank=True)
    risk_class = models.CharField(max_length=24)
    policy_reason = models.TextField()
    status = models.CharField(
        max_length=12, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING, db_index=True
    )
    required_approvals = models.PositiveSmallIntegerField(default=1)
    approvals_count = models.PositiveSmallIntegerField(default=0)
    deadline = models.DateTimeField(null=True, blank=True, db_index=True)
    escalate_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    decided_arguments = models.JSONField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    resolution_comment = models.TextField(blank=True)
    # The broker did not take the resume rung after the decision: the sweeper rings it at its
    # next period instead of after RUN_REQUEUE_AFTER_SECONDS.
    resume_lost = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The inbox's first page, newest first, of everything or one status: no sort of every request.
            models.Index(fields=["-created_at", "-id"], name="approval_newest_idx"),
            models.Index(fields=["status", "-created_at", "-id"], name="approval_status_newest_idx"),
            # What the dashboard and /metrics count from the index alone (agents/dashboard.py, config/metrics.py).
            models.Index(fields=["kind", "created_at", "agent", "status", "escalated_at"], name="approval_window_idx"),
            models.Index(fields=["status", "agent", "created_at"], name="approval_pending_idx"),
            models.Index(fields=["created_at", "decided_by", "decided_at"], name="approval_decided_idx"),
            models.Index(fields=["agent", "tool", "status", "escalated_at", "created_at"], name="approval_totals_idx"),
        ]

    def __str__(self) -> str:
        return f"approval {self.pk}: {self.tool} ({self.status})"

    @property
    def pending_arguments(self) -> JSONObject:
        """What an approval would execute now: the proposal, or a reviewer's edit of it."""
        arguments: JSONObject = self.decided_arguments if self.decided_arguments is not None else self.arguments
        return arguments

    @property
    def pending_arguments_hash(self) -> str:
        return self.arguments_hash if self.decided_arguments is None else arguments_hash(self.decided_arguments)


class Decision(models.Model):
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    verdict = models.CharField(max_length=10, choices=DecisionVerdict.choices)
    arguments = models.JSONField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["request", "reviewer"], name="decision_unique_reviewer")]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer_id} on approval {self.request_id}"


class InboxEvent(models.Model):
    """What the websocket pushed, in order: its id is the monotonic ``seq`` clients resume from.

    Events commit in seq order (approvals/notify.py), and each names the seq of the event before
    it, so that a socket can tell a push that overtook an earlier one (approvals/consumers.py)."""

    type = models.CharField(max_length=40)
    approval = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="events")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    prev_seq = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        # The events of a reviewer's agents after a seq (replays and gap fills).
        indexes = [models.Index(fields=["agent", "id"], name="inboxevent_agent_seq")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type}"


class WebhookDelivery(models.Model):
    """One signed POST: of an approval event to its agent's webhook, or of an alert to its rule's."""

    # Empty for an alert of a rule on every agent.
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_deliveries")
    alert = models.ForeignKey(
        "Alert", null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # The broker refused its task: the sweeper rings it again at its next period.
    enqueue_lost = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.event} → {self.agent_id or f'alert {self.alert_id}'}"

    @property
    def url(self) -> str:
        if self.alert is not None:
            return self.alert.rule.webhook_url
        return self.agent.webhook_url if self.agent is not None else ""

    @property
    def secret(self) -> str:
        if self.alert is not None:
            return self.alert.rule.webhook_secret
        return self.agent.webhook_secret if self.agent is not None else ""


class AccessGrant(models.Model):
    """Who gave a right that lets a user decide an agent's approvals (separation of duties).

    One row per live grant, written by ``approvals.grants`` when the right is created, deleted
    with it: ``review_agent`` on an agent to a user (``user`` + ``agent``) or to a group
    (``group`` + ``agent``), and a user's membership of a group (``user`` + ``group``), since a
    group's right reaches its members. The granter is ``granted_by``, or ``by_system`` for what
    the deployment itself sets up (a management command, a migration); neither means nobody
    declared who did it, which counts as the holder's own grant.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="+")
    group = models.ForeignKey(Group, null=True, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, null=True, on_delete=models.CASCADE, related_name="+")
    # Kept like a decision's reviewer: who granted a right stays known.
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="access_grants_given"
    )
    by_system = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "agent"], condition=models.Q(group__isnull=True), name="accessgrant_unique_user_agent"
            ),
            models.UniqueConstraint(
                fields=["group", "agent"], condition=models.Q(user__isnull=True), name="accessgrant_unique_group_agent"
            ),
            models.UniqueConstraint(
                fields=["user", "group"], condition=models.Q(agent__isnull=True), name="accessgrant_unique_membership"
            ),
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, agent__isnull=False, group__isnull=True)
                | models.Q(group__isnull=False, agent__isnull=False, user__isnull=True)
                | models.Q(user__isnull=False, group__isnull=False, agent__isnull=True),
                name="accessgrant_one_kind",
            ),
        ]

    def __str__(self) -> str:
        holder = f"user {self.user_id}" if self.user_id else f"group {self.group_id}"
        right = f"review of agent {self.agent_id}" if self.agent_id else f"membership of group {self.group_id}"
        return f"{holder}: {right}"


class AlertMetric(models.TextChoices):
    TOOL_ERROR_RATE = "tool_error_rate", "tool error rate (share of finished tool calls that failed)"
    COST_PER_HOUR = "cost_per_hour", "cost per hour"
    APPROVALS_OVER_SLA = "approvals_over_sla", "pending approvals older than their SLA"
    STEPS_PER_RUN = "steps_per_run", "most steps in one run"
    RUBBER_STAMP = "rubber_stamp", "reviewers who rubber-stamp"


class AlertRule(models.Model):
    """A threshold on a metric over a sliding window, evaluated periodically (approvals.alerts)."""

    class Comparison(models.TextChoices):
        ABOVE = "above"

    name = models.CharField(max_length=100)
    metric = models.CharField(max_length=24, choices=AlertMetric.choices)
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="alert_rules",
        help_text="Empty: the metric over every agent together.",
    )
    window_seconds = models.PositiveIntegerField(default=600, validators=[MinValueValidator(60)])
    threshold = models.DecimalField(max_digits=14, decimal_places=4, validators=[MinValueValidator(0)])
    comparison = models.CharField(max_length=8, choices=Comparison.choices, default=Comparison.ABOVE)
    webhook_url = models.URLField(blank=True, help_text="Empty: the banner only.")
    webhook_secret = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name}: {self.metric} {self.comparison} {self.threshold}"

    def clean(self) -> None:
        if self.webhook_url and not self.webhook_secret:
            raise ValidationError({"webhook_secret": "A webhook needs a secret to sign its requests."})


class AlertStatus(models.TextChoices):
    FIRING = "firing"
    RESOLVED = "resolved"


# Every allowed move of Alert.status, from -> to; only ``approvals.alerts`` applies them. An alert
# is created firing and resolves once; the rule fires again as a new alert.
ALERT_MOVES: dict[str, frozenset[str]] = {
    AlertStatus.FIRING: frozenset({AlertStatus.RESOLVED}),
    AlertStatus.RESOLVED: frozenset(),
}


class Alert(models.Model):
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    status = models.CharField(max_length=10, choices=AlertStatus.choices, default=AlertStatus.FIRING)
    value = models.DecimalField(max_digits=18, decimal_places=4)
    evidence = models.JSONField(default=dict, blank=True)
    fired_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            # Two evaluators at once cannot both fire a rule: the second insert fails.
            models.UniqueConstraint(
                fields=["rule"], condition=models.Q(status="firing"), name="alert_one_firing_per_rule"
            ),
        ]
        indexes = [models.Index(fields=["status", "rule"], name="alert_status_rule")]

    def __str__(self) -> str:
        return f"alert {self.pk}: {self.rule.name} ({self.status})"

    @property
    def agent(self) -> Agent | None:
        """The rule's agent: the audit log files the alert's events under it."""
        return self.rule.agent
