"""Reviewer analytics for operators: how each reviewer decides each agent's requests, with the
rubber-stamp flag (approval fatigue is how human oversight fails in practice)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from agents.permissions import is_operator
from approvals.analytics import reviewer_stats
from config.pages import render_page


@login_required
@require_GET
def console_reviewers(request: HttpRequest) -> HttpResponse:
    if not is_operator(request.user):
        raise PermissionDenied("Reviewer analytics are for operators.")
    window = timedelta(seconds=settings.RUBBER_STAMP_WINDOW_SECONDS)
    since = timezone.now() - window
    stats = reviewer_stats(since=since)
    return render_page(
        request,
        "console/reviewers.html",
        {
            "stats": stats,
            "since": since,
            "window_days": f"{window.total_seconds() / 86400:g}",
            "stamps": sum(1 for row in stats if row.rubber_stamp),
            "fast_seconds": settings.RUBBER_STAMP_SECONDS,
            "share_percent": f"{100 * settings.RUBBER_STAMP_SHARE:g}",
            "min_decisions": settings.RUBBER_STAMP_MIN_DECISIONS,
        },
    )
