"""Oversight over the REST API, for operators: reviewer analytics with the rubber-stamp flag, and
an agent's autonomy advice with its evidence. Reads only: applying advice is
``PATCH /api/v1/agents/{slug}/`` or the console, both audited."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TypedDict

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from agents.permissions import IsOperator
from approvals.advisor import advice_for
from approvals.analytics import reviewer_stats
from config.serializers import QuerySerializer, error_responses


class ReviewerStatsSerializer(serializers.Serializer[dict[str, object]]):
    reviewer_id = serializers.IntegerField()
    reviewer = serializers.CharField()
    agent_slug = serializers.CharField()
    decisions = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True, help_text="Median dwell of the decisions.")
    edit_rate = serializers.FloatField()
    rejection_rate = serializers.FloatField(help_text="Share rejected or dismissed.")
    fast_unchanged_share = serializers.FloatField(help_text="Share approved unchanged within RUBBER_STAMP_SECONDS.")
    rubber_stamp = serializers.BooleanField()


class SuggestionSerializer(serializers.Serializer[dict[str, object]]):
    tool = serializers.CharField()
    current_level = serializers.IntegerField(min_value=1, max_value=5)
    suggested_level = serializers.IntegerField(min_value=1, max_value=5)
    direction = serializers.ChoiceField(choices=["raise", "lower"])
    reason = serializers.CharField()
    decisions = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    edited = serializers.IntegerField()
    rejected = serializers.IntegerField()
    incidents = serializers.IntegerField()
    incident_approval_ids = serializers.ListField(child=serializers.IntegerField())
    incident_tool_call_ids = serializers.ListField(child=serializers.IntegerField())


class StatsFilters(TypedDict, total=False):
    since: datetime


class AdviceFilters(TypedDict, total=False):
    last: int


class ReviewerStatsApi(APIView):
    permission_classes = [IsOperator]

    class FilterSerializer(QuerySerializer[StatsFilters]):
        since = serializers.DateTimeField(
            required=False, help_text="Decisions from this moment on; by default the last RUBBER_STAMP_WINDOW_SECONDS."
        )

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: ReviewerStatsSerializer(many=True), **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        validated: StatsFilters = filters.validated_data
        default = timezone.now() - timedelta(seconds=settings.RUBBER_STAMP_WINDOW_SECONDS)
        stats = reviewer_stats(since=validated.get("since", default))
        # many=True takes a list of instances; the stubs type a single one.
        return Response(ReviewerStatsSerializer([asdict(row) for row in stats], many=True).data)  # type: ignore[arg-type]


class AgentAdviceApi(APIView):
    permission_classes = [IsOperator]

    class FilterSerializer(QuerySerializer[AdviceFilters]):
        last = serializers.IntegerField(
            required=False, min_value=1, max_value=1000, help_text="Outcomes per tool; ADVISOR_DECISIONS by default."
        )

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: SuggestionSerializer(many=True), **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        validated: AdviceFilters = filters.validated_data
        agent = get_object_or_404(Agent, slug=slug)
        advice = advice_for(agent=agent, last=validated.get("last"))
        return Response(SuggestionSerializer([asdict(row) for row in advice], many=True).data)  # type: ignore[arg-type]
