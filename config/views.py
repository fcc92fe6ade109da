from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve

INBOX_PATH = "/inbox/"


@login_required
def home(request: HttpRequest) -> HttpResponse:
    # The inbox is the reviewers' start page; until it exists, say who is signed in.
    try:
        resolve(INBOX_PATH)
    except Resolver404:
        return render(request, "home.html")
    return redirect(INBOX_PATH)
