from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "audit"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

        from audit import checks, signals  # noqa: F401  (registers the system check)

        user_logged_in.connect(signals.on_logged_in, dispatch_uid="audit.auth.login")
        user_login_failed.connect(signals.on_login_failed, dispatch_uid="audit.auth.login_failed")
        user_logged_out.connect(signals.on_logged_out, dispatch_uid="audit.auth.logout")
