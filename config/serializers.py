"""Serializer pieces every API shares: the error body, and choice sets with a fixed schema name.

Each class is an OpenAPI component named after it minus "Serializer", so names are unique
across the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_choice_field
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from audit.types import JSON

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema
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

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Direction) -> dict[str, JSON]:
        schema = build_choice_field(self.target)
        schema.pop("x-spec-enum-id", None)  # drf-spectacular's own marker, for the enums it names itself
        return schema


# --- Errors -----------------------------------------------------------------------------------------


class ErrorBody(TypedDict, total=False):
    detail: str
    code: str
    errors: dict[str, list[str]]
    retry_after: int


class ErrorSerializer(serializers.Serializer[ErrorBody]):
    """An error answer, as ``config.api.exception_handler`` writes it.

    A domain error (a refused decision, a disabled agent, an invalid run input...) has
    ``detail``, ``code`` and, when fields are at fault, ``errors``. A request that fails its
    own validation answers ``{field: [message]}`` instead, with the field names as keys
    (``non_field_errors`` for the body as a whole). Some codes carry more keys: a 409
    ``already_decided`` adds ``status`` and ``decided_by``, a 409 ``arguments_changed`` adds the
    current ``arguments`` and ``arguments_hash``. Authentication, permission and "not found"
    answers have ``detail`` only.
    """

    detail = serializers.CharField(required=False, help_text="What went wrong, for a person to read.")
    code = serializers.CharField(
        required=False, help_text="Stable machine-readable reason, e.g. conflict, invalid_input, not_cancellable."
    )
    # A field, not Serializer.errors: the metaclass takes declared fields off the class.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages by field, for the fields at fault.",
    )
    retry_after = serializers.IntegerField(
        required=False, help_text="Seconds to wait before trying again (too many failed sign-ins)."
    )


ERROR_DESCRIPTIONS = {
    400: "The request is invalid.",
    401: "No valid token or session.",
    403: "Not allowed for this user.",
    404: "No such object, or not visible to this user.",
    409: "Conflicts with the current state.",
    429: "Too many attempts.",
}


def error_responses(*statuses: int, descriptions: dict[int, str] | None = None) -> dict[int, OpenApiResponse]:
    """``@extend_schema(responses=...)`` entries for error statuses, all with the Error body."""
    descriptions = {**ERROR_DESCRIPTIONS, **(descriptions or {})}
    return {status: OpenApiResponse(ErrorSerializer, description=descriptions[status]) for status in statuses}


# --- Audit log --------------------------------------------------------------------------------------
