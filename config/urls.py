from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from config import health, views

# The admin's sign-in page counts failures and refuses attempts over the limit too.
admin.site.login_form = views.AdminSigninForm

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before django.contrib.auth.urls, whose "login" it replaces: the same page, with limits.
    path("accounts/login/", views.SigninView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/", include("agents.urls")),
    path("api/v1/", include("approvals.urls")),
    path("api/v1/", include("audit.urls")),
    path("", views.home, name="home"),
    path("", include("approvals.page_urls")),
    path("", include("agents.page_urls")),
]
