from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.models import AuditEvent
from audit.permissions import IsAuditor
from audit.selectors import ProofNotFound, audit_event_list, audit_event_proof, audit_head, parse_moment
from audit.serializers import AuditEventOutputSerializer, AuditHeadSerializer, AuditProofSerializer
from audit.types import JSON
from config.parsing import INT64_MAX
from config.serializers import QuerySerializer, error_responses

# The longest ISO 8601 datetime: 2026-11-24T09:30:00.123456+01:00 is 32 characters.
MOMENT_MAX_LENGTH = 64


@extend_schema_field(OpenApiTypes.DATETIME)
class MomentField(serializers.Field[dt.datetime, JSON, str, object]):
    """An ISO 8601 date or datetime (a date means its midnight, UTC unless an offset is given)."""

    def to_internal_value(self, data: JSON) -> dt.datetime:
        if len(str(data)) > MOMENT_MAX_LENGTH:
            raise serializers.ValidationError(
                f"Too long for a date or datetime (at most {MOMENT_MAX_LENGTH} characters)."
            )
        try:
            return parse_moment(str(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: dt.datetime) -> str:
        return value.isoformat()


class AuditEventPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int | None:
        # DRF would take a page_size it cannot read (text, 0, digits of another script) as the
        # default: the schema says a number from 1, so anything else is refused.
        raw = request.query_params.get(self.page_size_query_param or "")
        if raw is not None and not (len(raw) <= 19 and raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise serializers.ValidationError({"page_size": [f"A whole number from 1 (at most {self.max_page_size})."]})
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = f"Events per page, at most {self.max_page_size} (more is taken as that)."
        return parameters

    def decode_cursor(self, request: Request) -> Cursor | None:
        cursor = super().decode_cursor(request)
        # The position is an event id, compared with the id column: anything else (text, a number
        # beyond 64 bits) would fail in the database rather than here.
        if cursor is not None and cursor.position is not None:
            position = str(cursor.position)  # the text of the query string (the stubs say int)
            if not (len(position) <= 19 and position.isascii() and position.isdigit() and int(position) <= INT64_MAX):
                raise NotFound(self.invalid_cursor_message)
        return cursor


class AuditEventFilters(TypedDict, total=False):
    """The validated query of GET /api/v1/audit/events/: keyword arguments of audit_event_list()."""

    action: str
    action_prefix: str
    actor: str
    actor_type: str
    target_type: str
    target_id: str
    run: int
    agent: str
    since: dt.datetime
    until: dt.datetime


class AuditEventListApi(APIView):
    permission_classes = [IsAuditor]
    # Read by drf-spectacular too, so the schema shows the paginated envelope.
    pagination_class = AuditEventPagination

    class FilterSerializer(QuerySerializer[AuditEventFilters]):
        action = serializers.CharField(
            required=False, max_length=100, help_text="Exact action code, e.g. approvals.request.decided."
        )
        action_prefix = serializers.CharField(
            required=False, max_length=100, help_text="Action codes starting with this, e.g. auth."
        )
        actor = serializers.CharField(
            required=False, max_length=200, help_text="A username, agent:<slug>, policy or system."
        )
        actor_type = serializers.ChoiceField(choices=AuditEvent.ActorType.choices, required=False)
        target_type = serializers.CharField(
            required=False, max_length=100, help_text="app_label.model, e.g. agents.run."
        )
        target_id = serializers.CharField(required=False, max_length=64)
        run = serializers.IntegerField(required=False, min_value=1, max_value=INT64_MAX)
        agent = serializers.CharField(required=False, max_length=100, help_text="Agent slug.")
        since = MomentField(required=False, help_text="Inclusive lower bound on created_at.")
        until = MomentField(required=False, help_text="Exclusive upper bound on created_at.")

        def validate(self, attrs: AuditEventFilters) -> AuditEventFilters:
            since, until = attrs.get("since"), attrs.get("until")
            if since is not None and until is not None and since >= until:
                raise serializers.ValidationError({"until": "until must be later than since."})
            return attrs

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: AuditEventOutputSerializer(many=True),
            **error_responses(400, 401, 403, 404, descriptions={404: "The cursor is invalid."}),
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        validated: AuditEventFilters = filters.validated_data
        events = audit_event_list(**validated)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response(AuditEventOutputSerializer(page, many=True).data)


class AuditHeadApi(APIView):
    permission_classes = [IsAuditor]

    @extend_schema(responses={200: AuditHeadSerializer, **error_responses(401, 403)})
    def get(self, request: Request) -> Response:
        return Response(AuditHeadSerializer(audit_head()).data)


class AuditProofQuery(TypedDict, total=False):
    checkpoint: int


class AuditEventProofApi(APIView):
    permission_classes = [IsAuditor]

    class QuerySerializer(QuerySerializer[AuditProofQuery]):
        checkpoint = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=INT64_MAX,
            help_text="The sequence of the signed checkpoint whose tree to prove against (default: the latest).",
        )

    @extend_schema(
        parameters=[QuerySerializer],
        responses={
            200: AuditProofSerializer,
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                descriptions={
                    404: "No such event or checkpoint.",
                    409: "The event is pending or sealed after the checkpoint, or the checkpoint has no tree.",
                },
            ),
        },
    )
    def get(self, request: Request, event_id: str) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        validated: AuditProofQuery = query.validated_data
        # The path takes any text, so that a malformed id is this API's JSON 404, not the router's.
        if not (len(event_id) <= 19 and event_id.isascii() and event_id.isdigit() and 1 <= int(event_id) <= INT64_MAX):
            raise ProofNotFound(f"No audit event {event_id[:40]!r}.")
        proof = audit_event_proof(event_id=int(event_id), checkpoint=validated.get("checkpoint"))
        return Response(AuditProofSerializer(proof).data)


__all__ = [
    # Moved to audit.serializers; still importable from here (audit_export reads its fields).
    "AuditEventOutputSerializer",
]
