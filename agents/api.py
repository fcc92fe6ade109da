from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from agents import services
from agents.models import Agent, Run, Step
from agents.permissions import IsOperator, agents_visible_to, may_read_run, may_start_run
from config.throttle import signin_failure_record, signin_throttle_check

logger = logging.getLogger(__name__)


class TokenThrottle(AnonRateThrottle):
    scope = "token"

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            # The rate lives in Redis; an outage must not turn sign-ins into 500s (the failed
            # sign-in limits fail open as well).
            logger.warning("token rate limit could not be checked; request allowed", exc_info=True)
            return True


class TokenApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=256, trim_whitespace=False)

    @extend_schema(request=InputSerializer, responses={200: dict, 400: dict, 429: dict})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        # Over the limit, the password is not even checked: no auth.login_failed event either.
        throttled = signin_throttle_check(request=request, username=username)
        if throttled is not None:
            return Response(
                {"detail": throttled.message, "retry_after": throttled.retry_after},
                status=429,
                headers={"Retry-After": str(throttled.retry_after)},
            )
        user = authenticate(request, **data.validated_data)
        if user is None or not user.is_active:
            signin_failure_record(request=request, username=username)
            return Response({"detail": "Unable to sign in with these credentials."}, status=400)
        token, _ = Token.objects.get_or_create(user=user)
        # A sign-in like the page's: the same signal audits it (auth.login, via token) and
        # updates last_login. No session is created.
        user_logged_in.send(sender=user.__class__, request=request, user=user, via="token")
        return Response({"token": token.key})


class AgentOutputSerializer(serializers.ModelSerializer):
    tools = serializers.JSONField()
    tool_levels = serializers.JSONField()
    input_schema = serializers.JSONField()

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
        ]


class AgentListApi(APIView):
    @extend_schema(responses=AgentOutputSerializer(many=True))
    def get(self, request):
        agents = agents_visible_to(user=request.user).order_by("slug")
        return Response(AgentOutputSerializer(agents, many=True).data)


class AgentDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        autonomy_level = serializers.IntegerField(min_value=1, max_value=5, required=False)
        tool = serializers.CharField(max_length=100, required=False, help_text="Set the level for this tool only.")
        enabled = serializers.BooleanField(required=False)
        reason = serializers.CharField(max_length=1000)

        def validate(self, attrs):
            if "autonomy_level" not in attrs and "enabled" not in attrs:
                raise serializers.ValidationError("Give autonomy_level or enabled.")
            return attrs

    def get_permissions(self):
        if self.request.method == "PATCH":
            return [IsOperator()]
        return super().get_permissions()

    @extend_schema(responses=AgentOutputSerializer)
    def get(self, request, slug: str):
        agent = get_object_or_404(agents_visible_to(user=request.user), slug=slug)
        return Response(AgentOutputSerializer(agent).data)

    @extend_schema(request=InputSerializer, responses=AgentOutputSerializer)
    def patch(self, request, slug: str):
        agent = get_object_or_404(Agent, slug=slug)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if "tool" in values and values["tool"] not in agent.tools:
            return Response({"tool": [f"{values['tool']} is not one of this agent's tools."]}, status=400)
        if "autonomy_level" in values:
            agent = services.agent_set_level(
                agent=agent,
                level=values["autonomy_level"],
                user=request.user,
                reason=values["reason"],
                tool=values.get("tool"),
            )
        if "enabled" in values:
            agent = services.agent_set_enabled(
                agent=agent, enabled=values["enabled"], user=request.user, reason=values["reason"]
            )
        return Response(AgentOutputSerializer(agent).data)


class StepOutputSerializer(serializers.ModelSerializer):
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


class RunOutputSerializer(serializers.ModelSerializer):
    agent: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    started_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)
    steps = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "agent",
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

    def get_steps(self, run: Run) -> Any:
        if not self.context.get("with_steps", True):
            return []
        return StepOutputSerializer(run.steps.order_by("index"), many=True).data


class RunCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        input = serializers.JSONField()

    @extend_schema(request=InputSerializer, responses={201: RunOutputSerializer})
    def post(self, request, slug: str):
        agent = get_object_or_404(agents_visible_to(user=request.user), slug=slug)
        if not may_start_run(user=request.user, agent=agent):
            return Response({"detail": "You may not start runs of this agent."}, status=403)
        if not isinstance(request.data, dict):
            return Response({"detail": "The body must be a JSON object with an 'input' object."}, status=400)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.run_create(agent=agent, user=request.user, payload=data.validated_data["input"])
        return Response(RunOutputSerializer(run, context={"with_steps": False}).data, status=status.HTTP_201_CREATED)


class RunDetailApi(APIView):
    @extend_schema(responses=RunOutputSerializer)
    def get(self, request, run_id: int):
        run = get_object_or_404(Run.objects.select_related("agent", "started_by"), pk=run_id)
        if not may_read_run(user=request.user, run=run):
            return Response({"detail": "Not found."}, status=404)
        return Response(RunOutputSerializer(run).data)


class RunCancelApi(APIView):
    permission_classes = [IsOperator]

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses=RunOutputSerializer)
    def post(self, request, run_id: int):
        run = get_object_or_404(Run.objects.select_related("agent"), pk=run_id)
        data = self.InputSerializer(data=request.data if isinstance(request.data, dict) else {})
        data.is_valid(raise_exception=True)
        run = services.run_cancel(run=run, user=request.user, reason=data.validated_data["reason"])
        return Response(RunOutputSerializer(run, context={"with_steps": False}).data)


class EmergencyStopApi(APIView):
    permission_classes = [IsOperator]

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=1000)

    @extend_schema(request=InputSerializer, responses={200: dict})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        stopped = services.agents_emergency_stop(user=request.user, reason=data.validated_data["reason"])
        return Response({"stopped": stopped})
