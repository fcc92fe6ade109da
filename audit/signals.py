"""Sign-in, failed sign-in and sign-out, from Django's auth signals (connected in apps.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from audit.services import audit_record
from audit.types import AnyRequest
from config.clients import client_address

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser


def _client(request: AnyRequest | None) -> dict[str, str]:
    if request is None:
        return {}
    meta = getattr(request, "META", {})
    return {"ip": client_address(request), "user_agent": meta.get("HTTP_USER_AGENT", "")[:200]}


def on_logged_in(sender: object, request: AnyRequest | None, user: AbstractBaseUser, **kwargs: object) -> None:
    data: dict[str, object] = {"username": user.get_username(), **_client(request)}
    if kwargs.get("via"):
        data["via"] = kwargs["via"]  # "token": POST /api/v1/auth/token/ sends the signal with it
    audit_record(actor=user, action="auth.login", target=user, data=data)


def on_login_failed(
    sender: object, credentials: dict[str, object], request: AnyRequest | None = None, **kwargs: object
) -> None:
    # Only the username is kept; Django has already blanked the password in ``credentials``
    # and nothing else of them is recorded.
    user_model = get_user_model()
    username = str(credentials.get(user_model.USERNAME_FIELD) or credentials.get("username") or "")
    target = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first() if username else None
    audit_record(
        actor=AnonymousUser(),
        action="auth.login_failed",
        target=target,
        data={"username": username, "known_user": target is not None, **_client(request)},
    )


def on_logged_out(sender: object, request: AnyRequest | None, user: AbstractBaseUser | None, **kwargs: object) -> None:
    if user is None:
        return  # the session had no signed-in user
    audit_record(actor=user, action="auth.logout", target=user, data=_client(request))
