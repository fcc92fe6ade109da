from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    # What the mixin is mixed into, so that its body and super().clean() type-check.
    _AuthenticationFormBase = AuthenticationForm
else:
    _AuthenticationFormBase = object


@login_required
def home(request: HttpRequest) -> HttpResponse:
    # The inbox is the reviewers' start page; until it exists, say who is signed in.
    try:
        resolve(INBOX_PATH)
    except Resolver404:
        return render(request, "home.html")
    return redirect(INBOX_PATH)


class SigninLimitMixin(_AuthenticationFormBase):
    """For an AuthenticationForm: refuse an attempt over the limit before the password is
    checked (so it writes no auth.login_failed event), and count each failed one."""

    throttled: SigninThrottled | None = None

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or self.data.get("username") or "")
        self.throttled = signin_throttle_check(request=self.request, username=username)
        if self.throttled is not None:
            raise ValidationError(self.throttled.message, code="throttled")
        try:
            return super().clean()
        except ValidationError:
            if username and self.cleaned_data.get("password"):
                signin_failure_record(request=self.request, username=username)
            raise


class SigninForm(SigninLimitMixin, AuthenticationForm):
    pass


class AdminSigninForm(SigninLimitMixin, AdminAuthenticationForm):
    pass


class SigninView(LoginView[SigninForm]):
    form_class = SigninForm

    def form_invalid(self, form: SigninForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.throttled is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.throttled.retry_after)
        return response
