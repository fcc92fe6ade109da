"""Every API error in one shape, from one place: ``{"detail", "code", "errors", ...}``.

- ``exception_handler`` (DRF's EXCEPTION_HANDLER) answers what the API views raise: domain
  errors (``config.errors``), DRF's own (validation, authentication, permission, not found,
  method, media type, throttling), Django's (``ValidationError``, ``PermissionDenied``,
  ``Http404``) and a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413).
- ``JSONErrorMiddleware`` answers, under ``/api/``, what never reaches a view or escapes it: a URL
  that matches nothing (``/api/v1/runs/abc/``), an exception no handler knows (500), an HTML
  error page from Django or a middleware; with DEBUG on as well, where Django would send its
  debug pages.
- ``JSONParser`` is the API's only parser: request bodies go through ``config.parsing``.

``detail`` is for a person, ``code`` is stable for programs, ``errors`` holds messages by field
(dotted paths into the body: ``input.amount``, ``ids.3``; ``non_field_errors`` for the body as a
whole), empty when no field is at fault. Some answers add keys: ``retry_after`` on 429, the
details a domain error carries (``status`` and ``decided_by`` on a 409 ``already_decided``...).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import IO, Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    ValidationError,
)
from django.http import Http404, HttpRequest, HttpResponseBase, JsonResponse
from django.utils.log import log_response
from rest_framework import exceptions, parsers
from rest_framework.response import Response
from rest_framework.views import set_rollback

from config.errors import Conflict, DomainError, Forbidden
from config.parsing import json_loads_checked

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "JSONErrorMiddleware",
    "JSONParser",
    "error_body",
    "exception_handler",
]

API_PREFIX = "/api/"
# The code of an answer that carries no code of its own (an HTML page replaced, an unknown error).
STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
}

Errors = dict[str, list[str]]
# The whole detail of an unexpected error: nothing of its cause reaches the client.
SERVER_ERROR = "Server error."


def error_body(detail: str, code: str, errors: Errors | None = None, **extra: Any) -> dict[str, Any]:
    """The one error shape: ``detail``, ``code``, ``errors`` (by field), then any extra keys."""
    return {"detail": detail, "code": code, "errors": errors or {}, **extra}


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(exc: BaseException) -> ErrorAnswer | None:
    """The answer to ``exc`` in the one shape, or None when it is not an error a client caused."""
    if isinstance(exc, DomainError):
        details = dict(exc.details)
        errors = _field_errors(details.pop("errors", {}))
        for key in ("detail", "code"):
            details.pop(key, None)
        headers: dict[str, str] = {"Retry-After": str(details["retry_after"])} if "retry_after" in details else {}
        return ErrorAnswer(exc.status_code, error_body(exc.message, exc.code, errors, **details), headers)
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            by_field = {
                "non_field_errors" if key == "__all__" else key: value for key, value in exc.message_dict.items()
            }
            errors = _field_errors(by_field)
        else:
            errors = _field_errors(exc.messages)
        return ErrorAnswer(400, error_body(_summary(errors), "invalid", errors))
    if isinstance(exc, PermissionDenied):
        return ErrorAnswer(403, error_body(str(exc) or "You may not do this.", "permission_denied"))
    if isinstance(exc, Http404):
        return ErrorAnswer(404, error_body(str(exc) or "Not found.", "not_found"))
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return ErrorAnswer(413, error_body(f"The request body is larger than the limit of {limit} bytes.", "too_large"))
    if isinstance(exc, SuspiciousOperation | BadRequest):
        return ErrorAnswer(400, error_body("The request could not be read.", "bad_request"))
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        # A view's whole-body complaint, raised as {"detail": "..."}: that is the detail.
        whole = errors.pop("detail", None)
        detail = " ".join(whole) if whole else _summary(errors)
        return ErrorAnswer(exc.status_code, error_body(detail, "invalid", errors))
    if isinstance(exc, exceptions.APIException):
        headers = {}
        extra: dict[str, Any] = {}
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait:
            extra["retry_after"] = math.ceil(wait)
            headers["Retry-After"] = str(extra["retry_after"])
        code = exc.detail.code if isinstance(exc.detail, exceptions.ErrorDetail) else exc.default_code
        return ErrorAnswer(exc.status_code, error_body(str(exc.detail), str(code), **extra), headers)
    return None


def exception_handler(exc: Exception, context: Mapping[str, object]) -> Response | None:
    answer = error_answer(exc)
    if answer is None:
        return None  # DRF raises it again: JSONErrorMiddleware answers 500
    _log_suspicious(exc)
    set_rollback()
    return Response(answer.body, status=answer.status, headers=answer.headers)


def _log_suspicious(exc: BaseException) -> None:
    if isinstance(exc, SuspiciousOperation):
        # As Django itself would: these go to the django.security loggers.
        logging.getLogger(f"django.security.{type(exc).__name__}").error(str(exc))


def _field_errors(detail: Any, path: tuple[str, ...] = ()) -> Errors:
    """DRF's nested error structure (dicts by field, lists by index) as messages by dotted path."""
    name = ".".join(path) or "non_field_errors"
    if isinstance(detail, dict):
        errors: Errors = {}
        for key, value in detail.items():
            for where, messages in _field_errors(value, (*path, str(key))).items():
                errors.setdefault(where, []).extend(messages)
        return errors
    if isinstance(detail, list | tuple):
        if all(not isinstance(item, dict | list | tuple) for item in detail):
            return {name: [str(item) for item in detail]} if detail else {}
        errors = {}
        for index, item in enumerate(detail):
            for where, messages in _field_errors(item, (*path, str(index))).items():
                errors.setdefault(where, []).extend(messages)
        return errors
    return {name: [str(detail)]}


def _summary(errors: Errors) -> str:
    """One line for ``detail``: the first message, and how many more there are."""
    if not errors:
        return "The request is invalid."
    where, messages = next(iter(errors.items()))
    first = messages[0] if where == "non_field_errors" else f"{where}: {messages[0]}"
    more = sum(len(m) for m in errors.values()) - 1
    return first + (f" (and {more} more)" if more else "")


# --- Under /api/, nothing but JSON ----------------------------------------------------------------------


def is_api_path(request: HttpRequest) -> bool:
    path = request.path_info
    return path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)


class JSONErrorMiddleware:
    """Under ``/api/``: an exception that escapes a view, and any error page that is not JSON,
    become an answer in the one error shape (headers and cookies of a replaced page kept)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if response.status_code >= 400 and is_api_path(request) and not _is_json(response):
            response = _replaced(response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if not is_api_path(request):
            return None
        answer = error_answer(exception)
        if answer is not None:
            _log_suspicious(exception)
            # Logged as a 4xx by Django's handler, like every answer.
            return _json_response(answer.body, status=answer.status, headers=answer.headers)
        # What Django does with an uncaught exception (the signal: error reporters, the test
        # client), but the answer is JSON, with nothing of the exception in it, DEBUG or not.
        signals.got_request_exception.send(sender=None, request=request)
        response = _json_response(error_body(SERVER_ERROR, "server_error"), status=500)
        log_response(
            "%s: %s", "Internal Server Error", request.path, response=response, request=request, exception=exception
        )
        return response


def _json_response(body: dict[str, Any], *, status: int, headers: dict[str, str] | None = None) -> JsonResponse:
    # Compact, as DRF writes the answers of the views.
    return JsonResponse(body, status=status, headers=headers, json_dumps_params={"separators": (",", ":")})


def _is_json(response: HttpResponseBase) -> bool:
    media_type = response.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _replaced(page: HttpResponseBase) -> HttpResponseBase:
    status = page.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    code = STATUS_CODES.get(status, phrase.lower().replace(" ", "_").replace("-", "_"))
    detail = SERVER_ERROR if status == 500 else f"{phrase.capitalize()}."
    response = _json_response(error_body(detail, code), status=status)
    for header, value in page.items():
        if header.lower() not in ("content-type", "content-length"):
            response[header] = value
    response.cookies = page.cookies
    if getattr(page, "_has_been_logged", False):
        response._has_been_logged = True  # type: ignore[attr-defined]
    return response


# --- The API's parser -----------------------------------------------------------------------------------


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser on ``config.parsing.json_loads_checked``.

    A subclass of DRF's, so that DRF reads the body through ``request.body``, which enforces
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413) before anything is parsed.
    """

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        return json_loads_checked(stream.read())
