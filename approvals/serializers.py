"""What the approvals API takes and returns.

Each class here is an OpenAPI component named after it minus "Serializer", so names are unique
across the project.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from rest_framework import serializers

from agents.models import RunStatus
from agents.serializers import JSONObjectField, StepOutputSerializer
from agents.tools import Risk
from approvals.models import AlertMetric, AlertStatus, ApprovalKind, ApprovalStatus, Decision
from audit.types import JSON, JSONObject
from config.parsing import INT64_MAX
from config.serializers import JSONBodySerializer, NamedChoiceField

VERDICT_CHOICES = ["approve", "reject", "edit", "respond", "done", "dismiss", "ok", "flag"]
BULK_VERDICT_CHOICES = ["approve", "reject", "done", "dismiss", "ok", "flag"]


# --- Approvals --------------------------------------------------------------------------------------


class AgentRefSerializer(serializers.Serializer[JSONObject]):
    slug = serializers.CharField()
    name = serializers.CharField()


class ApprovalSerializer(serializers.Serializer[JSONObject]):
    """An approval as the inbox shows it, over REST and the websocket alike.

    Describes, field by field, the dict ``approvals.events.approval_payload`` builds; the API
    passes that dict through this serializer, which leaves every value as it is.
    """

    id = serializers.IntegerField()
    run = serializers.IntegerField(help_text="The run's id.")
    agent = AgentRefSerializer()
    kind = NamedChoiceField(enum_name="ApprovalKindEnum", choices=ApprovalKind.choices)
    tool = serializers.CharField(help_text="The tool the agent proposes to call (final_answer for a flagged answer).")
    summary = serializers.CharField(help_text="One line: the tool and its first arguments.")
    arguments = JSONObjectField(help_text="The arguments the agent proposed.")
    decided_arguments = JSONObjectField(allow_null=True, help_text="The arguments as a reviewer edited them.")
    arguments_hash = serializers.CharField(
        help_text="Send it back with an approve: it binds the approval to exactly these arguments (409 if they "
        "changed meanwhile)."
    )
    rationale = serializers.CharField(allow_blank=True, help_text="Why the agent proposes it.")
    risk_class = serializers.ChoiceField(choices=Risk.CHOICES)
    policy_reason = serializers.CharField(help_text="Why the policy asks a person.")
    status = NamedChoiceField(enum_name="ApprovalStatusEnum", choices=ApprovalStatus.choices)
    required_approvals = serializers.IntegerField()
    approvals_count = serializers.IntegerField()
    created_at = serializers.DateTimeField(allow_null=True)
    deadline = serializers.DateTimeField(allow_null=True)
    escalated = serializers.BooleanField(help_text="Past its SLA and escalated.")
    decided_by = serializers.CharField(allow_null=True, help_text="Username of who decided.")
    decided_at = serializers.DateTimeField(allow_null=True)


class DecisionOutputSerializer(serializers.ModelSerializer[Decision]):
    reviewer: serializers.SlugRelatedField[Decision] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = Decision
        fields = ["reviewer", "verdict", "arguments", "comment", "created_at"]


class ApprovalDetailSerializer(ApprovalSerializer):
    """An approval with what a reviewer needs to decide it: the agent's brief, the run's history."""

    objective = serializers.CharField(help_text="The agent's objective.")
    scope = serializers.CharField(help_text="What the agent may and may not do.")
    arguments_schema = JSONObjectField(help_text="JSON Schema of the tool's arguments (empty if unknown).")
    run_status = NamedChoiceField(enum_name="RunStatusEnum", choices=RunStatus.choices)
    started_by = serializers.CharField(allow_null=True, help_text="Username of who started the run.")
    decisions = DecisionOutputSerializer(many=True)
    history = StepOutputSerializer(many=True, help_text="The run's steps so far.")


# --- Decisions --------------------------------------------------------------------------------------


class DecisionRequest(TypedDict):
    verdict: str
    arguments: NotRequired[JSON]
    comment: str
    arguments_hash: NotRequired[str]


class DecisionInputSerializer(JSONBodySerializer[DecisionRequest]):
    verdict = serializers.ChoiceField(choices=VERDICT_CHOICES)
    arguments = serializers.JSONField(required=False)
    comment = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    arguments_hash = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        help_text="The approval's arguments_hash as the reviewer saw it: an approve of changed arguments gets 409.",
    )

    def validate(self, attrs: DecisionRequest) -> DecisionRequest:
        if attrs["verdict"] == "edit" and not isinstance(attrs.get("arguments"), dict):
            raise serializers.ValidationError({"arguments": ["An edit needs the edited arguments as an object."]})
        return attrs


class BulkDecisionRequest(TypedDict):
    ids: list[int]
    verdict: str
    comment: str


class BulkDecisionRequestSerializer(JSONBodySerializer[BulkDecisionRequest]):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=INT64_MAX), min_length=1, max_length=200
    )
    verdict = serializers.ChoiceField(choices=BULK_VERDICT_CHOICES)
    comment = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")


class BulkDecisionResult(TypedDict):
    id: int
    status: int
    detail: NotRequired[str]
    approval_status: NotRequired[str]


class BulkDecisionResultSerializer(serializers.Serializer[BulkDecisionResult]):
    """One approval's outcome: ``approval_status`` when decided (200), ``detail`` when not."""

    id = serializers.IntegerField()
    status = serializers.IntegerField(help_text="The HTTP status a single decision would have had: 200, 403, 404...")
    detail = serializers.CharField(required=False, help_text="Why it was not decided.")
    approval_status = NamedChoiceField(
        enum_name="ApprovalStatusEnum",
        choices=ApprovalStatus.choices,
        required=False,
        help_text="The approval's status after the decision.",
    )


class BulkDecisionResponse(TypedDict):
    results: list[BulkDecisionResult]


class BulkDecisionResponseSerializer(serializers.Serializer[BulkDecisionResponse]):
    results = BulkDecisionResultSerializer(many=True, help_text="In the order of the ids sent, each id once.")


# --- Alerts -----------------------------------------------------------------------------------------


class AlertRuleRefSerializer(serializers.Serializer[JSONObject]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    metric = NamedChoiceField(enum_name="AlertMetricEnum", choices=AlertMetric.choices)
    agent = serializers.CharField(allow_null=True, help_text="The agent's slug; null: every agent together.")
    window_seconds = serializers.IntegerField()
    comparison = serializers.CharField()
    threshold = serializers.CharField(help_text="A decimal number, as text.")


class AlertSerializer(serializers.Serializer[JSONObject]):
    """An alert as ``approvals.webhooks.alert_payload`` builds it: also what its webhooks send."""

    id = serializers.IntegerField()
    status = NamedChoiceField(enum_name="AlertStatusEnum", choices=AlertStatus.choices)
    value = serializers.CharField(help_text="The metric's value when it fired (while firing: the latest).")
    evidence = JSONObjectField(help_text="Counts and ids of what made the value.")
    fired_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    rule = AlertRuleRefSerializer()
