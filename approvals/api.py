from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.api import StepOutputSerializer
from agents.tools import Risk, registry
from approvals.decisions import approval_request_decide
from approvals.events import approval_payload
from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus, Decision
from approvals.selectors import approval_list_for_reviewer
from config.api import DomainError

VERDICT_CHOICES = ["approve", "reject", "edit", "respond", "done", "dismiss", "ok", "flag"]


class DecisionOutputSerializer(serializers.ModelSerializer):
    reviewer: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Decision
        fields = ["reviewer", "verdict", "arguments", "comment", "created_at"]


def approval_detail(approval: ApprovalRequest) -> dict:
    tool = registry.get(approval.tool)
    steps = approval.run.steps.order_by("index")
    return {
        **approval_payload(approval),
        "objective": approval.agent.objective,
        "scope": approval.agent.scope,
        "arguments_schema": tool.input_schema() if tool else {},
        "run_status": approval.run.status,
        "started_by": approval.run.started_by.get_username() if approval.run.started_by else None,
        "decisions": DecisionOutputSerializer(approval.decisions.select_related("reviewer"), many=True).data,
        "history": StepOutputSerializer(steps, many=True).data,
    }


def visible_approval(request, approval_id: int) -> ApprovalRequest:
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


class ApprovalListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=ApprovalStatus.choices, required=False)
        agent = serializers.SlugField(required=False)
        risk = serializers.ChoiceField(choices=Risk.CHOICES, required=False)
        kind = serializers.ChoiceField(choices=ApprovalKind.choices, required=False)
        order = serializers.ChoiceField(choices=["newest", "urgent"], required=False, default="newest")

    @extend_schema(parameters=[FilterSerializer], responses={200: dict})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = approval_list_for_reviewer(user=request.user, **filters.validated_data)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response([approval_payload(a) for a in page])


class ApprovalDetailApi(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request, approval_id: int):
        return Response(approval_detail(visible_approval(request, approval_id)))


class DecisionInputSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=VERDICT_CHOICES)
    arguments = serializers.JSONField(required=False)
    comment = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    arguments_hash = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        help_text="The approval's arguments_hash as the reviewer saw it: an approve of changed arguments gets 409.",
    )

    def validate(self, attrs):
        if attrs["verdict"] == "edit" and not isinstance(attrs.get("arguments"), dict):
            raise serializers.ValidationError({"arguments": ["An edit needs the edited arguments as an object."]})
        return attrs


def require_object_body(request) -> dict:
    if not isinstance(request.data, dict):
        raise serializers.ValidationError({"detail": "The body must be a JSON object."})
    return request.data


class ApprovalDecisionApi(APIView):
    @extend_schema(request=DecisionInputSerializer, responses={200: dict})
    def post(self, request, approval_id: int):
        approval = visible_approval(request, approval_id)
        data = DecisionInputSerializer(data=require_object_body(request))
        data.is_valid(raise_exception=True)
        approval = approval_request_decide(approval=approval, reviewer=request.user, **data.validated_data)
        return Response(approval_detail(approval))


class BulkDecisionApi(APIView):
    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=200)
        verdict = serializers.ChoiceField(choices=["approve", "reject", "done", "dismiss", "ok", "flag"])
        comment = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={200: dict})
    def post(self, request):
        data = self.InputSerializer(data=require_object_body(request))
        data.is_valid(raise_exception=True)
        values = data.validated_data
        approvals = {
            a.pk: a
            for a in approval_list_for_reviewer(user=request.user)
            .select_related("run__started_by", "tool_call")
            .filter(pk__in=values["ids"])
        }
        results = []
        for approval_id in dict.fromkeys(values["ids"]):
            approval = approvals.get(approval_id)
            if approval is None:
                results.append({"id": approval_id, "status": 404, "detail": "No such approval."})
                continue
            try:
                decided = approval_request_decide(
                    approval=approval, reviewer=request.user, verdict=values["verdict"], comment=values["comment"]
                )
            except DomainError as exc:
                results.append({"id": approval_id, "status": exc.status_code, "detail": exc.message})
            else:
                results.append({"id": approval_id, "status": 200, "approval_status": decided.status})
        return Response({"results": results})
