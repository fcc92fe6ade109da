from __future__ import annotations

from typing import Any, TypedDict, cast

from django.contrib.auth.models import User
from django.core.paginator import Paginator
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.permissions import IsOperator
from agents.tools import Risk, registry
from approvals.decisions import approval_request_decide
from approvals.events import approval_payload
from approvals.models import Alert, AlertStatus, ApprovalKind, ApprovalRequest, ApprovalStatus
from approvals.selectors import alert_list, approval_list_for_reviewer
from approvals.serializers import (
    VERDICT_CHOICES,
    AlertSerializer,
    ApprovalDetailSerializer,
    ApprovalSerializer,
    BulkDecisionRequest,
    BulkDecisionRequestSerializer,
    BulkDecisionResponseSerializer,
    BulkDecisionResult,
    DecisionInputSerializer,
    DecisionOutputSerializer,
    DecisionRequest,
)
from approvals.webhooks import alert_payload
from audit.types import JSONObject
from config.api import DomainError
from config.serializers import QuerySerializer, error_responses

__all__ = [
    # Moved to approvals.serializers; still importable from here.
    "VERDICT_CHOICES",
    "DecisionInputSerializer",
    "DecisionOutputSerializer",
]


def approval_detail(approval: ApprovalRequest) -> JSONObject:
    """The approval payload and what a reviewer needs to decide it; ApprovalDetailSerializer's input."""
    tool = registry.get(approval.tool)
    return {
        **approval_payload(approval),
        "objective": approval.agent.objective,
        "scope": approval.agent.scope,
        "arguments_schema": tool.input_schema() if tool else {},
        "run_status": approval.run.status,
        "started_by": approval.run.started_by.get_username() if approval.run.started_by else None,
        "decisions": approval.decisions.select_related("reviewer"),
        "history": approval.run.steps.order_by("index"),
    }


def visible_approval(request: Request, approval_id: int) -> ApprovalRequest:
    approval = (
        approval_list_for_reviewer(user=request.user)
        .select_related("run__started_by", "tool_call")
        .filter(pk=approval_id)
        .first()
    )
    if approval is None:
        # The same answer for "does not exist" and "not yours": ids are not an oracle.
        raise NotFound("No such approval.")
    return approval


class ApprovalFilters(TypedDict, total=False):
    """The validated query of GET /api/v1/approvals/: keyword arguments of approval_list_for_reviewer()."""

    status: str
    agent: str
    risk: str
    kind: str
    order: str


class ApprovalPagination(PageNumberPagination):
    def get_page_number(self, request: Request, paginator: Paginator[Any]) -> int | str:
        # A page is a number, as the schema says: DRF would read an empty page= as page 1, "last"
        # as the last page, and Django's int() takes digits of any script.
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit()):
            raise NotFound(self.invalid_page_message)
        return super().get_page_number(request, paginator)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
        return parameters


class ApprovalListApi(APIView):
    # Read by drf-spectacular too, so the schema shows the paginated envelope.
    pagination_class = ApprovalPagination

    class FilterSerializer(QuerySerializer[ApprovalFilters]):
        status = serializers.ChoiceField(choices=ApprovalStatus.choices, required=False)
        agent = serializers.SlugField(required=False, max_length=100)
        risk = serializers.ChoiceField(choices=Risk.CHOICES, required=False)
        kind = serializers.ChoiceField(choices=ApprovalKind.choices, required=False)
        order = serializers.ChoiceField(choices=["newest", "urgent"], required=False, default="newest")

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: ApprovalSerializer(many=True),
            **error_responses(400, 401, 404, descriptions={404: "No such page."}),
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        validated: ApprovalFilters = filters.validated_data
        queryset = approval_list_for_reviewer(user=request.user, **validated)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self) or []
        payloads = [approval_payload(a) for a in page]
        # many=True takes a list of instances; the stubs type a single one.
        return paginator.get_paginated_response(ApprovalSerializer(payloads, many=True).data)  # type: ignore[arg-type]


class ApprovalDetailApi(APIView):
    @extend_schema(responses={200: ApprovalDetailSerializer, **error_responses(401, 404)})
    def get(self, request: Request, approval_id: int) -> Response:
        return Response(ApprovalDetailSerializer(approval_detail(visible_approval(request, approval_id))).data)


def require_object_body(request: Request) -> JSONObject:
    if not isinstance(request.data, dict):
        raise serializers.ValidationError({"detail": "The body must be a JSON object."})
    return request.data


class ApprovalDecisionApi(APIView):
    @extend_schema(
        request=DecisionInputSerializer,
        examples=[
            OpenApiExample("Approve", value={"verdict": "approve"}, request_only=True),
            OpenApiExample(
                "Reject", value={"verdict": "reject", "comment": "More than the order was worth."}, request_only=True
            ),
            OpenApiExample(
                "Edit",
                value={"verdict": "edit", "arguments": {"amount": 40}, "comment": "Less the shipping."},
                request_only=True,
            ),
        ],
        responses={
            200: ApprovalDetailSerializer,
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                descriptions={409: "Already decided, or the arguments changed since the reviewer loaded them."},
            ),
        },
    )
    def post(self, request: Request, approval_id: int) -> Response:
        approval = visible_approval(request, approval_id)
        data = DecisionInputSerializer(data=require_object_body(request))
        data.is_valid(raise_exception=True)
        values: DecisionRequest = data.validated_data
        # IsAuthenticated: the user is signed in.
        approval = approval_request_decide(approval=approval, reviewer=cast(User, request.user), **values)
        return Response(ApprovalDetailSerializer(approval_detail(approval)).data)


class BulkDecisionApi(APIView):
    @extend_schema(
        request=BulkDecisionRequestSerializer,
        examples=[OpenApiExample("Approve three", value={"ids": [1, 2, 3], "verdict": "approve"}, request_only=True)],
        responses={200: BulkDecisionResponseSerializer, **error_responses(400, 401)},
    )
    def post(self, request: Request) -> Response:
        data = BulkDecisionRequestSerializer(data=require_object_body(request))
        data.is_valid(raise_exception=True)
        values: BulkDecisionRequest = data.validated_data
        approvals = {
            a.pk: a
            for a in approval_list_for_reviewer(user=request.user)
            .select_related("run__started_by", "tool_call")
            .filter(pk__in=values["ids"])
        }
        results: list[BulkDecisionResult] = []
        for approval_id in dict.fromkeys(values["ids"]):
            approval = approvals.get(approval_id)
            if approval is None:
                results.append({"id": approval_id, "status": 404, "detail": "No such approval."})
                continue
            try:
                decided = approval_request_decide(
                    approval=approval,
                    reviewer=cast(User, request.user),
                    verdict=values["verdict"],
                    comment=values["comment"],
                )
            except DomainError as exc:
                results.append({"id": approval_id, "status": exc.status_code, "detail": exc.message})
            else:
                results.append({"id": approval_id, "status": 200, "approval_status": decided.status})
        return Response(BulkDecisionResponseSerializer({"results": results}).data)


class AlertFilters(TypedDict, total=False):
    status: str


class AlertListApi(APIView):
    """Operators: the alerts, newest first."""

    permission_classes = [IsOperator]
    pagination_class = ApprovalPagination

    class FilterSerializer(QuerySerializer[AlertFilters]):
        status = serializers.ChoiceField(choices=AlertStatus.choices, required=False)

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: AlertSerializer(many=True),
            **error_responses(400, 401, 403, 404, descriptions={404: "No such page."}),
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        validated: AlertFilters = filters.validated_data
        paginator = self.pagination_class()
        page: list[Alert] = paginator.paginate_queryset(alert_list(**validated), request, view=self) or []
        payloads = [alert_payload(alert) for alert in page]
        return paginator.get_paginated_response(AlertSerializer(payloads, many=True).data)  # type: ignore[arg-type]
