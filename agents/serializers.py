"""What the agents API takes and returns (the error body is ``audit.serializers.ErrorSerializer``).

Each class here is an OpenAPI component named after it minus "Serializer", so names are unique
across the project (two ``InputSerializer`` classes would collide in the schema).
"""

from __future__ import annotations

from typing import ClassVar, NotRequired, TypedDict

from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Agent, AgentVersion, Run, RunFeedback, RunStatus, Step
from audit.types import JSON
from config.serializers import JSONBodySerializer, NamedChoiceField

# --- JSON columns, passed through as stored; the classes only tell the schema their shape -----------


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    """A JSON object."""


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class JSONStringListField(serializers.JSONField):
    """A JSON list of strings."""


@extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
class JSONIntegerMapField(serializers.JSONField):
    """A JSON object whose values are integers."""


# --- Sign-in ----------------------------------------------------------------------------------------


class TokenRequest(TypedDict):
    username: str
    password: str


class TokenRequestSerializer(JSONBodySerializer[TokenRequest]):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class TokenResponse(TypedDict):
    token: str


class TokenResponseSerializer(serializers.Serializer[TokenResponse]):
    token = serializers.CharField(help_text='Send as "Authorization: Token <token>".')


# --- Agents -----------------------------------------------------------------------------------------


def _version_number(help_text: str) -> serializers.SlugRelatedField[AgentVersion]:
    return serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True, help_text=help_text)


class AgentOutputSerializer(serializers.ModelSerializer[Agent]):
    current_version = _version_number("Number of the version new runs take (outside the canary share).")
    candidate_version = _version_number("Number of the candidate version, or null.")
    tools = JSONStringListField(help_text="Names of the tools the agent may call.")
    tool_levels = JSONIntegerMapField(help_text="Autonomy level by tool, where it differs from autonomy_level.")
    input_schema = JSONObjectField(help_text="JSON Schema of a run's input.")

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "objective",
            "scope",
            "tools",
            "autonomy_level",
            "tool_levels",
            "enabled",
            "input_schema",
            "max_steps",
            "max_cost",
            "max_wall_seconds",
            "on_reject",
            "approval_sla_seconds",
            "approval_deadline_seconds",
            "reasoner",
            "llm_model",
            "temperature",
            "max_tokens",
            "tool_choice",
            "current_version",
            "candidate_version",
            "canary_share",
        ]


class AgentVersionOutputSerializer(serializers.ModelSerializer[AgentVersion]):
    based_on = _version_number("The version this one's diff is from (the current one when it was made).")
    behaviour = JSONObjectField(help_text="The behaviour fields of this version.")
    diff = JSONObjectField(help_text='{"field": {"old", "new"}} from based_on.')
    author = serializers.CharField(source="author_name", read_only=True)

    class Meta:
        model = AgentVersion
        fields = ["number", "behaviour", "diff", "based_on", "author", "reason", "created_at"]
        read_only_fields = fields


class AgentUpdateRequest(TypedDict):
    autonomy_level: NotRequired[int]
    tool: NotRequired[str]
    enabled: NotRequired[bool]
    reason: str


class AgentUpdateRequestSerializer(JSONBodySerializer[AgentUpdateRequest]):
    autonomy_level = serializers.IntegerField(min_value=1, max_value=5, required=False)
    tool = serializers.CharField(max_length=100, required=False, help_text="Set the level for this tool only.")
    enabled = serializers.BooleanField(required=False)
    reason = serializers.CharField(max_length=1000)

    # What validate() requires, in the schema too.
    schema_extra: ClassVar[dict[str, JSON]] = {"anyOf": [{"required": ["autonomy_level"]}, {"required": ["enabled"]}]}

    def validate(self, attrs: AgentUpdateRequest) -> AgentUpdateRequest:
        if "autonomy_level" not in attrs and "enabled" not in attrs:
            raise serializers.ValidationError("Give autonomy_level or enabled.")
        return attrs


class EmergencyStopRequest(TypedDict):
    reason: str


class EmergencyStopRequestSerializer(JSONBodySerializer[EmergencyStopRequest]):
    reason = serializers.CharField(max_length=1000)


class EmergencyStopResponse(TypedDict):
    stopped: int


class EmergencyStopResponseSerializer(serializers.Serializer[EmergencyStopResponse]):
    stopped = serializers.IntegerField(help_text="How many enabled agents were disabled.")


# --- Runs -------------------------------------------------------------------------------------------


class StepOutputSerializer(serializers.ModelSerializer[Step]):
    class Meta:
        model = Step
        fields = [
            "index",
            "kind",
            "input",
            "output",
            "error",
            "verdict",
            "verdict_reason",
            "latency_ms",
            "prompt_tokens",
            "completion_tokens",
            "cost",
            "created_at",
        ]


class RunOutputSerializer(serializers.ModelSerializer[Run]):
    agent: serializers.SlugRelatedField[Agent] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    version = _version_number("Number of the agent version the run runs.")
    started_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status = NamedChoiceField(enum_name="RunStatusEnum", choices=RunStatus.choices, read_only=True)
    steps = serializers.SerializerMethodField(help_text="Empty in the answers to create and cancel.")

    class Meta:
        model = Run
        fields = [
            "id",
            "agent",
            "version",
            "status",
            "input",
            "result",
            "error",
            "step_count",
            "cost",
            "started_by",
            "created_at",
            "started_at",
            "finished_at",
            "cancel_requested",
            "steps",
        ]

    @extend_schema_field(StepOutputSerializer(many=True))
    def get_steps(self, run: Run) -> JSON:
        if not self.context.get("with_steps", True):
            return []
        return StepOutputSerializer(run.steps.order_by("index"), many=True).data


class RunCreateRequest(TypedDict):
    input: JSON


class RunCreateRequestSerializer(JSONBodySerializer[RunCreateRequest]):
    input = JSONObjectField(help_text="An object matching the agent's input_schema.")


class RunCancelRequest(TypedDict):
    reason: str


class RunCancelRequestSerializer(JSONBodySerializer[RunCancelRequest]):
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")


# --- Feedback on a finished run ---------------------------------------------------------------------


class RunFeedbackRequest(TypedDict):
    rating: str
    correction: NotRequired[str]


class RunFeedbackRequestSerializer(JSONBodySerializer[RunFeedbackRequest]):
    rating = NamedChoiceField(enum_name="FeedbackRatingEnum", choices=RunFeedback.Rating.choices)
    correction = serializers.CharField(
        max_length=RunFeedback.CORRECTION_MAX_LENGTH,
        required=False,
        allow_blank=True,
        default="",
        help_text="What the run should have done; replaces an earlier correction (empty: none).",
    )


class RunFeedbackOutputSerializer(serializers.ModelSerializer[RunFeedback]):
    user: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    rating = NamedChoiceField(enum_name="FeedbackRatingEnum", choices=RunFeedback.Rating.choices, read_only=True)

    class Meta:
        model = RunFeedback
        fields = ["run", "user", "rating", "correction", "created_at", "updated_at"]
        read_only_fields = fields
