"""Serializer pieces every API shares: the error body, and choice sets with a fixed schema name.

Each class is an OpenAPI component named after it minus "Serializer", so names are unique
across the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema as OpenApiAutoSchema
from drf_spectacular.plumbing import build_choice_field
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from audit.types import JSON

if TYPE_CHECKING:
    from drf_spectacular.utils import Direction

# --- Choice sets shared by several components -------------------------------------------------------


class NamedChoiceField(serializers.ChoiceField):
    """A ChoiceField whose choice set is one schema component, ``enum_name``, wherever it is used.

    drf-spectacular names enums after the field and, when the same choice set appears in several
    components under different field names (``status``, ``approval_status``...), warns that it
    cannot name them well. A choice set used that way gets its name here instead.
    """

    def __init__(self, *, enum_name: str, choices: Sequence[Any], **kwargs: Any) -> None:
        self.enum_name = enum_name
        super().__init__(choices=choices, **kwargs)


class NamedChoiceFieldSchema(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = NamedChoiceField

    def get_name(self) -> str:
        return str(self.target.enum_name)

    def map_serializer_field(self, auto_schema: OpenApiAutoSchema, direction: Direction) -> dict[str, JSON]:
        schema = build_choice_field(self.target)
        schema.pop("x-spec-enum-id", None)  # drf-spectacular's own marker, for the enums it names itself
        return schema


# --- Errors -----------------------------------------------------------------------------------------


class ErrorBody(TypedDict):
    detail: str
    code: str
    errors: dict[str, list[str]]
    retry_after: NotRequired[int]
    status: NotRequired[str]
    decided_by: NotRequired[str]
    arguments: NotRequired[dict[str, JSON]]
    arguments_hash: NotRequired[str]


class ErrorSerializer(serializers.Serializer[ErrorBody]):
    """Every error answer of the API, as ``config.api`` writes it.

    ``detail``, ``code`` and ``errors`` are always there; ``errors`` holds messages by field when
    fields are at fault (dotted paths into the body: ``input.amount``, ``ids.3``;
    ``non_field_errors`` for the body as a whole) and is empty otherwise. Some codes carry more
    keys: a 429 adds ``retry_after``; a 409 ``already_decided`` adds ``status`` and
    ``decided_by``; a 409 ``arguments_changed`` adds the current ``arguments`` and
    ``arguments_hash``.
    """

    detail = serializers.CharField(help_text="What went wrong, for a person to read.")
    code = serializers.CharField(
        help_text="Stable machine-readable reason: invalid, parse_error, too_deep, invalid_text, "
        "number_out_of_range, duplicate_key, too_large, not_authenticated, permission_denied, not_found, "
        "conflict, already_decided, throttled..."
    )
    # A field, not Serializer.errors: the metaclass takes declared fields off the class.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages by field, for the fields at fault (empty when none is).",
    )
    retry_after = serializers.IntegerField(required=False, help_text="Seconds to wait before trying again (429).")
    status = serializers.CharField(
        required=False, help_text="The approval's status, when it was already decided (409 already_decided)."
    )
    decided_by = serializers.CharField(
        required=False, help_text="Who decided it, when it was already decided (409 already_decided)."
    )
    arguments = serializers.DictField(
        required=False, help_text="The current arguments, when they changed meanwhile (409 arguments_changed)."
    )
    arguments_hash = serializers.CharField(
        required=False, help_text="The current arguments' hash, when they changed meanwhile (409 arguments_changed)."
    )


ERROR_DESCRIPTIONS = {
    400: "The request is invalid: a field, or the JSON itself (syntax, nesting, text, numbers).",
    401: "No valid token or session.",
    403: "Not allowed for this user.",
    404: "No such object, or not visible to this user.",
    409: "Conflicts with the current state.",
    413: "The body is larger than the limit (MAX_REQUEST_BYTES).",
    415: "The body is not JSON (Content-Type: application/json).",
    429: "Too many attempts.",
}
# Every operation that takes a body answers these too (documented by AutoSchema below).
BODY_ERRORS = (413, 415)


def error_responses(*statuses: int, descriptions: dict[int, str] | None = None) -> dict[int, OpenApiResponse]:
    """``@extend_schema(responses=...)`` entries for error statuses, all with the Error body."""
    descriptions = {**ERROR_DESCRIPTIONS, **(descriptions or {})}
    return {status: OpenApiResponse(ErrorSerializer, description=descriptions[status]) for status in statuses}


class AutoSchema(OpenApiAutoSchema):
    """drf-spectacular's schema, with the errors every operation that takes a body may answer
    (413 too large, 415 not JSON: the parser answers them before the view runs)."""

    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        # Not get_response_serializers(): @extend_schema(responses=...) overrides that one.
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            for status, response in error_responses(*BODY_ERRORS).items():
                if str(status) not in responses:
                    responses[str(status)] = self._get_response_for_code(  # type: ignore[no-untyped-call]
                        response, str(status), direction=direction
                    )
        return responses


# --- Audit log --------------------------------------------------------------------------------------
