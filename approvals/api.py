from __future__ import annotations

from typing import Any, TypedDict, cast

from django.contrib.auth.models import User
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property
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
        .select_related("run__started_by", "tool_call", "agent")
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


# The inbox list counts its approvals up to this many: beyond, counting every row of a large
# backlog on each page would cost more than the page (100,000 waiting approvals: tens of
# milliseconds on PostgreSQL). The answer then says "more than COUNT_CAP" with count_exact false.
COUNT_CAP = 10_000


class CappedPage(Page[ApprovalRequest]):
    """A page that knows whether another follows from the one row read past its end, not from
    the count."""

    def __init__(self, rows: list[ApprovalRequest], number: int, paginator: CappedPaginator, *, more: bool) -> None:
        super().__init__(rows, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more


class CappedPaginator(Paginator[ApprovalRequest]):
    """Django's paginator over a queryset whose count stops at COUNT_CAP + 1 rows. With an exact
    count, pages are checked against it as before; past the cap, a page exists when it has rows."""

    object_list: QuerySet[ApprovalRequest]

    @cached_property
    def _counted(self) -> int:
        # COUNT(*) over a subquery stopped after COUNT_CAP + 1 rows: its cost has a bound.
        return self.object_list.order_by()[: COUNT_CAP + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._counted, COUNT_CAP)

    @property
    def count_exact(self) -> bool:
        return self._counted <= COUNT_CAP

    def validate_number(self, number: int | float | str) -> int:
        if self.count_exact:
            return super().validate_number(number)
        try:
            valid = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if valid < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return valid

    def page(self, number: int | float | str) -> CappedPage:
        valid = self.validate_number(number)
        bottom = (valid - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if not rows and valid > 1:
            raise EmptyPage(self.error_messages["no_results"])
        return CappedPage(rows[: self.per_page], valid, self, more=len(rows) > self.per_page)


class ApprovalListPagination(ApprovalPagination):
    django_paginator_class = CappedPaginator

    def get_paginated_response(self, data: Any) -> Response:
        assert self.page is not None  # paginate_queryset() came first
        paginator = cast(CappedPaginator, self.page.paginator)
        return Response(
            {
                "count": paginator.count,
                "count_exact": paginator.count_exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        envelope = super().get_paginated_response_schema(schema)
        envelope["required"] = ["count", "count_exact", "results"]
        envelope["properties"] = {
            "count": {**envelope["properties"]["count"], "description": f"Exact up to {COUNT_CAP:,}."},
            "count_exact": {
                "type": "boolean",
                "description": f"false: there are more than count ({COUNT_CAP:,}) approvals; next links go on.",
            },
            **{name: value for name, value in envelope["properties"].items() if name != "count"},
        }
        return envelope


class ApprovalListApi(APIView):
    # Read by drf-spectacular too, so the schema shows the paginated envelope.
    pagination_class = ApprovalListPagination

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
