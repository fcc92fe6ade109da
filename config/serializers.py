"""Serializer pieces every API shares: the error body, and choice sets with a fixed schema name.

Each class is an OpenAPI component named after it minus "Serializer", so names are unique
across the project.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, TypeVar

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema as OpenApiAutoSchema
from drf_spectacular.plumbing import ResolvedComponent, build_choice_field
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from audit.types import JSON
from config.parsing import INT64_MAX

if TYPE_CHECKING:
    from drf_spectacular.utils import Direction

_IN = TypeVar("_IN")

# --- Request bodies and queries taken as the schema states them -------------------------------------


def _json_type_error(field: serializers.Field[Any, Any, Any, Any], value: JSON) -> JSON | None:
    """Why ``value`` is not of the JSON type the schema gives ``field``, or None.

    DRF reads form data, where everything is text, so it converts: ``0`` into the string "0",
    "3" and ``3.0`` into the integer 3, "yes" and ``1`` into True. A JSON body has types of its
    own; the schema states them, and a value of another type is refused, not converted."""
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be true or false."
    if isinstance(field, serializers.IntegerField):
        return None if isinstance(value, int) and not isinstance(value, bool) else "Must be an integer."
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "Must be a number."
    if isinstance(field, serializers.MultipleChoiceField):
        return None if isinstance(value, list) else "Must be a list."
    if isinstance(field, serializers.CharField | serializers.ChoiceField):
        return None if isinstance(value, str) else "Must be a string."
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Must be a list."
        items = {str(index): _json_type_error(field.child, item) for index, item in enumerate(value)}
        return {index: [error] if isinstance(error, str) else error for index, error in items.items() if error} or None
    if isinstance(field, serializers.DictField):
        return None if isinstance(value, dict) else "Must be an object."
    return None


# A request body: each field's value has the JSON type the schema gives it, or it is refused. (Not a
# docstring: drf-spectacular would make it the description of every body's component.)
class JSONBodySerializer(serializers.Serializer[_IN]):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            errors: dict[str, JSON] = {}
            for name, field in self.fields.items():
                if name in data and not field.read_only and not (data[name] is None and field.allow_null):
                    error = _json_type_error(field, data[name])
                    if error is not None:
                        errors[name] = [error] if isinstance(error, str) else error
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


# A query string's filters: a parameter given empty (``?status=``) is refused, not ignored. DRF
# reads an empty value of an optional field as no value, as an HTML form means it; the schema gives
# each parameter a type or a set of values, which the empty string is not.
class QuerySerializer(serializers.Serializer[_IN]):
    def to_internal_value(self, data: Any) -> Any:
        getlist = getattr(data, "getlist", None)
        errors: dict[str, list[str]] = {
            name: ["May not be empty: leave the parameter out instead."]
            for name, _ in self.fields.items()
            if name in data and "" in (getlist(name) if getlist else [data[name]])
        }
        if errors:
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


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


# Any JSON a request may carry where its shape is free (run input, edited arguments, keys a body adds
# beside its fields): what config.parsing.json_loads_checked lets through, as far as a schema can
# say it. Keys with a NUL and nesting past JSON_MAX_DEPTH are refused too; no keyword says those.
JSON_VALUE_REF = {"$ref": "#/components/schemas/JSONValue"}
JSON_VALUE_SCHEMA: dict[str, JSON] = {
    "description": "Any JSON value the API reads: integers within signed 64 bits, finite numbers, text "
    "without NUL characters, at most 64 levels of arrays and objects (400 otherwise).",
    "nullable": True,
    "anyOf": [
        {"type": "string", "pattern": "^[^\\u0000]*$"},
        {"type": "integer", "format": "int64", "minimum": -INT64_MAX - 1, "maximum": INT64_MAX},
        {"type": "number", "format": "double", "not": {"type": "integer"}},
        {"type": "boolean"},
        {"type": "array", "items": JSON_VALUE_REF},
        {"type": "object", "additionalProperties": JSON_VALUE_REF},
    ],
}


class AutoSchema(OpenApiAutoSchema):
    """drf-spectacular's schema, with the errors every operation that takes a body may answer
    (413 too large, 415 not JSON: the parser answers them before the view runs).

    More that the views do and drf-spectacular does not say: a text field that may not be blank
    refuses "" and, trimmed, "   "; free JSON in a request (and the keys a body adds beside its
    fields) is read by the one parser, whose limits the ``JSONValue`` component states; a PATCH
    validates its request serializer whole (the views never pass ``partial=True``), so its
    required fields stay required; and a serializer's ``schema_extra`` (keywords such as
    ``anyOf``) joins its component, for the rules its ``validate()`` enforces across fields."""

    def _json_value_ref(self) -> dict[str, JSON]:
        component = ResolvedComponent(  # type: ignore[no-untyped-call]
            name="JSONValue", type=ResolvedComponent.SCHEMA, object="JSONValue", schema=JSON_VALUE_SCHEMA
        )
        self.registry.register_on_missing(component)
        return dict(component.ref)

    def _map_serializer_field(self, field: Any, direction: Direction, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)  # type: ignore[no-untyped-call]
        if direction == "request" and isinstance(field, serializers.JSONField):
            # Free JSON in a request is what the parser reads, not anything at all.
            if schema == {}:
                return self._json_value_ref()
            if schema.get("type") == "object" and schema.get("additionalProperties") == {}:
                schema = {**schema, "additionalProperties": self._json_value_ref()}
        if direction == "request" and isinstance(field, serializers.CharField) and not field.allow_blank:
            # DRF refuses "" (and, trimming, "   ") where blank is not allowed: the schema says so.
            schema = {**schema, "minLength": max(schema.get("minLength", 0), 1)}
            has_pattern = "pattern" in schema or any(isinstance(v, RegexValidator) for v in field.validators)
            if field.trim_whitespace and not has_pattern and "format" not in schema:
                schema["pattern"] = r"\S"
        return schema

    def _map_basic_serializer(self, serializer: Any, direction: Direction) -> dict[str, Any]:
        if direction == "request" and getattr(serializer, "partial", False):
            serializer = copy.copy(serializer)
            serializer.partial = False
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)  # type: ignore[no-untyped-call]
        if direction == "request" and isinstance(serializer, JSONBodySerializer):
            # Keys beside the fields are ignored, but read like the rest of the body.
            schema["additionalProperties"] = self._json_value_ref()
        extra: Mapping[str, JSON] = getattr(serializer, "schema_extra", {})
        return {**schema, **extra}

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
