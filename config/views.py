from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve

from config.throttle import SigninThrottled, signin_failure_record, signin_throttle_check

INBOX_PATH = "/inbox/"


@login_required
def home(request: HttpRequest) -> HttpResponse:
    # The inbox is the reviewers' start page; until it exists, say who is signed in.
    try:
        resolve(INBOX_PATH)
    except Resolver404:
        return render(request, "home.html")
    return redirect(INBOX_PATH)


class SigninLimitMixin:
    """For an AuthenticationForm: refuse an attempt over the limit before the password is
    checked (so it writes no auth.login_failed event), and count each failed one."""

    throttled: SigninThrottled | None = None

    def clean(self) -> dict[str, Any]:
        form: Any = self
        username = str(form.cleaned_data.get("username") or form.data.get("username") or "")
        self.throttled = signin_throttle_check(request=form.request, username=username)
        if self.throttled is not None:
            raise ValidationError(self.throttled.message, code="throttled")
        try:
            return super().clean()  # type: ignore[misc]
        except ValidationError:
            if username and form.cleaned_data.get("password"):
                signin_failure_record(request=form.request, username=username)
            raise


class SigninForm(SigninLimitMixin, AuthenticationForm):
    pass


class AdminSigninForm(SigninLimitMixin, AdminAuthenticationForm):
    pass


class SigninView(LoginView):
    form_class = SigninForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if form.throttled is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.throttled.retry_after)
        return response
