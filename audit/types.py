"""Type aliases shared by the apps. They live in ``audit``, the base app every other imports.

``JSON`` is a value decoded from JSON or bound for it (a ``JSONField``, a request body, a
model's reply, a playbook): a dict, list, str, int, float, bool or None, nested. It stays an
alias of ``Any`` rather than a recursive union on purpose: such values are walked by key
(``entry["type"]``, ``step.get("when")``) whose shape the schema or the code path already
guarantees, and a union would force an ``isinstance`` before every access without catching
anything. The alias names the intent; everything that is not arbitrary JSON gets a real type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User
    from django.http import HttpRequest
    from rest_framework.request import Request

JSON: TypeAlias = Any
# A JSON object: the top level of a tool's arguments, a history entry, a webhook payload.
JSONObject: TypeAlias = dict[str, JSON]

# Whoever a request or a socket carries: the user model or the anonymous user. The project
# keeps Django's auth.User (no AUTH_USER_MODEL setting), which is also what django-stubs
# gives request.user and get_user_model().
AnyUser: TypeAlias = "User | AnonymousUser"

# A Django request or a DRF one (which wraps it): the sign-in code paths see both, the API's
# token view sends the auth signals with its DRF request.
AnyRequest: TypeAlias = "HttpRequest | Request"
