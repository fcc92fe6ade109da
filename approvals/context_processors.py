"""Template context for every page: the firing alerts the signed-in user is shown (base.html)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from approvals.selectors import alerts_firing_for


def firing_alerts(request: HttpRequest) -> dict[str, Any]:
    """Lazy: a page that does not show the banner (the admin, a JSON view) runs no query, and one
    that does runs one. Nothing at all for the anonymous user."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"firing_alerts": SimpleLazyObject(lambda: alerts_firing_for(user=user))}
