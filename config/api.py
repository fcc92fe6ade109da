"""Maps domain errors to HTTP answers in one place, so views stay thin."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.errors import Conflict, DomainError, Forbidden

__all__ = ["Conflict", "DomainError", "Forbidden", "exception_handler"]


def exception_handler(exc: Exception, context: dict[str, object]) -> Response | None:
    if isinstance(exc, DomainError):
        body = {"detail": exc.message, "code": exc.code, **exc.details}
        return Response(body, status=exc.status_code)
    if isinstance(exc, ValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, PermissionDenied):
        return Response({"detail": str(exc) or "You may not do this."}, status=status.HTTP_403_FORBIDDEN)
    return drf_exception_handler(exc, context)
