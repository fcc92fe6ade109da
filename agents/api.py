from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from agents import feedback, idempotency, operations, runtime
from agents.models import Agent, Run
from agents.permissions import IsOperator, agents_visible_to, may_read_run, may_start_run
from agents.selectors import run_feedback_list
from agents.serializers import (
    AgentOutputSerializer,
    AgentUpdateRequest,
    AgentUpdateRequestSerializer,
    AgentVersionOutputSerializer,
    EmergencyStopRequestSerializer,
    EmergencyStopResponseSerializer,
    RunCancelRequestSerializer,
    RunCreateRequestSerializer,
    RunFeedbackOutputSerializer,
    RunFeedbackRequestSerializer,
    RunOutputSerializer,
    StepOutputSerializer,
    TokenRequestSerializer,
    TokenResponseSerializer,
)
from agents.versions import versions_of
from config.api import error_body
from config.serializers import error_responses
from config.throttle import signin_failure_record, signin_throttle_check

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission

logger = logging.getLogger(__name__)

# The agent output names its current and candidate versions: loaded with the agent, not one query each.
VERSION_FIELDS = ("current_version", "candidate_version")


class TokenThrottle(AnonRateThrottle):
    scope = "token"

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            # The rate lives in Redis; an outage must not turn sign-ins into 500s (the failed
            # sign-in limits fail open as well).
            logger.warning("token rate limit could not be checked; request allowed", exc_info=True)
            return True


class TokenApi(APIView):
    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: TokenResponseSerializer,
            **error_responses(400, 429, descriptions={400: "Bad credentials, or a field missing."}),
        },
    )
    def post(self, request: Request) -> Response:
        data = TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        # Over the limit, the password is not even checked: no auth.login_failed event either.
        throttled = signin_throttle_check(request=request, username=username)
        if throttled is not None:
            return Response(
                error_body(throttled.message, "throttled", retry_after=throttled.retry_after),
                status=429,
                headers={"Retry-After": str(throttled.retry_after)},
            )
        user = authenticate(request, **data.validated_data)
        if user is None or not user.is_active:
            signin_failure_record(request=request, username=username)
            return Response(error_body("Unable to sign in with these credentials.", "invalid_credentials"), status=400)
        token, _ = Token.objects.get_or_create(user=user)
        # A sign-in like the page's: the same signal audits it (auth.login, via token) and
        # updates last_login. No session is created.
        user_logged_in.send(sender=user.__class__, request=request, user=user, via="token")
        return Response(TokenResponseSerializer({"token": token.key}).data)


class AgentListApi(APIView):
    @extend_schema(responses={200: AgentOutputSerializer(many=True), **error_responses(401)})
    def get(self, request: Request) -> Response:
        agents = agents_visible_to(user=request.user).select_related(*VERSION_FIELDS).order_by("slug")
        return Response(AgentOutputSerializer(agents, many=True).data)


class AgentVersionListApi(APIView):
    """An agent's versions, newest first. Operators only: versions hold playbooks and prompts."""

    permission_classes = [IsOperator]

    @extend_schema(responses={200: AgentVersionOutputSerializer(many=True), **error_responses(401, 403, 404)})
    def get(self, request: Request, slug: str) -> Response:
        agent = get_object_or_404(Agent, slug=slug)
        return Response(AgentVersionOutputSerializer(versions_of(agent), many=True).data)


class AgentDetailApi(APIView):
    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        if self.request.method == "PATCH":
            return [IsOperator()]
        return super().get_permissions()

    @extend_schema(responses={200: AgentOutputSerializer, **error_responses(401, 404)})
    def get(self, request: Request, slug: str) -> Response:
        agent = get_object_or_404(agents_visible_to(user=request.user).select_related(*VERSION_FIELDS), slug=slug)
        return Response(AgentOutputSerializer(agent).data)

    @extend_schema(
        request=AgentUpdateRequestSerializer,
        responses={200: AgentOutputSerializer, **error_responses(400, 401, 403, 404)},
        examples=[
            OpenApiExample(
                "Raise the level",
                value={"autonomy_level": 3, "reason": "A month of approvals without an edit."},
                request_only=True,
            ),
            OpenApiExample("Kill switch", value={"enabled": False, "reason": "Refunds look wrong."}, request_only=True),
        ],
    )
    def patch(self, request: Request, slug: str) -> Response:
        agent = get_object_or_404(Agent, slug=slug)
        data = AgentUpdateRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values: AgentUpdateRequest = data.validated_data
        if "tool" in values and values["tool"] not in agent.tools:
            raise serializers.ValidationError({"tool": [f"{values['tool']} is not one of this agent's tools."]})
        if "autonomy_level" in values:
            agent = operations.agent_set_level(
                agent=agent,
                level=values["autonomy_level"],
                user=request.user,
                reason=values["reason"],
                tool=values.get("tool"),
            )
        if "enabled" in values:
            agent = operations.agent_set_enabled(
                agent=agent, enabled=values["enabled"], user=request.user, reason=values["reason"]
            )
        return Response(AgentOutputSerializer(agent).data)


class RunCreateApi(APIView):
    @extend_schema(
        request=RunCreateRequestSerializer,
        examples=[
            OpenApiExample(
                "A refund (the demo support agent)",
                value={
                    "input": {
                        "ticket_id": 1,
                        "customer_email": "jane@example.com",
                        "amount": 42,
                        "currency": "USD",
                        "reason": "The kettle arrived broken.",
                    }
                },
                request_only=True,
            ),
        ],
        parameters=[
            OpenApiParameter(
                idempotency.HEADER,
                # What idempotency_key_parse() takes: something besides blanks, at most 255 characters.
                {"type": "string", "minLength": 1, "maxLength": idempotency.KEY_MAX_LENGTH, "pattern": r"\S"},
                OpenApiParameter.HEADER,
                required=False,
                description=(
                    "1 to 255 characters, unique per request, kept 24 hours per user. A retry with the same "
                    "key and the same body gets the first answer again (status and body, header "
                    "`Idempotent-Replayed: true`) and starts no second run; the same key with another body "
                    "gets 422, and 409 while the first request is still in flight."
                ),
            ),
        ],
        responses={
            201: RunOutputSerializer,
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                422,
                descriptions={
                    400: "The request is invalid, or the Idempotency-Key header is empty or too long.",
                    409: "The agent is disabled, or a request with this Idempotency-Key is still in flight.",
                    422: "This Idempotency-Key was used for another request (agent or body) within 24 hours.",
                },
            ),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        agent = get_object_or_404(agents_visible_to(user=request.user), slug=slug)
        if not may_start_run(user=request.user, agent=agent):
            raise PermissionDenied("You may not start runs of this agent.")
        key = idempotency.idempotency_key_parse(request.headers.get(idempotency.HEADER))
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"detail": "The body must be a JSON object with an 'input' object."})
        data = RunCreateRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        answer = idempotency.run_start(
            agent=agent,
            user=request.user,
            payload=data.validated_data["input"],
            body=request.data,
            key=key,
            render=lambda run: RunOutputSerializer(run, context={"with_steps": False}).data,
        )
        return Response(answer.body, status=answer.status, headers=answer.headers)


def _readable_run(request: Request, run_id: int) -> Run:
    run = Run.objects.select_related("agent", "started_by", "version").filter(pk=run_id).first()
    # One answer for "no such run" and "not yours to see": ids of others' runs stay unknown.
    if run is None or not may_read_run(user=request.user, run=run):
        raise NotFound("No such run.")
    return run


class RunDetailApi(APIView):
    @extend_schema(responses={200: RunOutputSerializer, **error_responses(401, 404)})
    def get(self, request: Request, run_id: int) -> Response:
        return Response(RunOutputSerializer(_readable_run(request, run_id)).data)


class RunFeedbackApi(APIView):
    @extend_schema(responses={200: RunFeedbackOutputSerializer(many=True), **error_responses(401, 404)})
    def get(self, request: Request, run_id: int) -> Response:
        run = _readable_run(request, run_id)
        return Response(RunFeedbackOutputSerializer(run_feedback_list(run=run), many=True).data)

    @extend_schema(
        request=RunFeedbackRequestSerializer,
        responses={
            200: RunFeedbackOutputSerializer,
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                descriptions={
                    403: "Only the run's starter or a reviewer of its agent may give feedback.",
                    409: "The run has not finished yet.",
                },
            ),
        },
        examples=[
            OpenApiExample(
                "Thumbs down with a correction",
                value={"rating": "down", "correction": "Refund 30 USD: the kettle was on sale."},
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = _readable_run(request, run_id)
        if not feedback.may_give_feedback(user=request.user, run=run):
            raise PermissionDenied("Only the run's starter or a reviewer of its agent may give feedback on it.")
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"detail": "The body must be a JSON object with a 'rating'."})
        data = RunFeedbackRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = feedback.run_feedback_give(
            run=run,
            user=request.user,
            rating=data.validated_data["rating"],
            correction=data.validated_data.get("correction", ""),
        )
        return Response(RunFeedbackOutputSerializer(given).data)


class RunCancelApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        request=RunCancelRequestSerializer,
        responses={
            200: RunOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, descriptions={409: "The run already ended."}),
        },
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = get_object_or_404(Run.objects.select_related("agent"), pk=run_id)
        data = RunCancelRequestSerializer(data=request.data if isinstance(request.data, dict) else {})
        data.is_valid(raise_exception=True)
        run = runtime.run_cancel(run=run, user=request.user, reason=data.validated_data["reason"])
        return Response(RunOutputSerializer(run, context={"with_steps": False}).data)


class EmergencyStopApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        request=EmergencyStopRequestSerializer,
        responses={200: EmergencyStopResponseSerializer, **error_responses(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        data = EmergencyStopRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        stopped = operations.agents_emergency_stop(user=request.user, reason=data.validated_data["reason"])
        return Response(EmergencyStopResponseSerializer({"stopped": stopped}).data)


__all__ = [
    # Moved to agents.serializers; still importable from here.
    "AgentOutputSerializer",
    "RunOutputSerializer",
    "StepOutputSerializer",
]
