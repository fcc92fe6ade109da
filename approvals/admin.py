from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse

from agents.permissions import is_operator
from approvals.grants import grants_by
from approvals.models import Alert, AlertRule, ApprovalRequest, BusinessRule, Decision, WebhookDelivery
from approvals.operations import alert_rule_delete, alert_rule_save, business_rule_delete, business_rule_save
from config.admin_base import CHECKED_JSON_FIELDS, ReadOnlyAdmin


class UserAdmin(DjangoUserAdmin[User]):
    """Django's user admin, with the groups a save adds recorded as added by the user at work
    (approvals.grants): joining a group that reviews an agent does not let one decide there."""

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        with grants_by(request.user):
            return super().changeform_view(request, object_id, form_url, extra_context)


admin.site.unregister(User)
admin.site.register(User, UserAdmin)


@admin.register(BusinessRule)
class BusinessRuleAdmin(admin.ModelAdmin[BusinessRule]):
    formfield_overrides = CHECKED_JSON_FIELDS
    list_display = ("__str__", "agent", "effect", "enabled", "note")
    list_filter = ("tool", "effect", "enabled")

    def save_model(self, request: HttpRequest, obj: BusinessRule, form: ModelForm[BusinessRule], change: bool) -> None:
        business_rule_save(rule=obj, by=request.user, reason="changed in admin")

    def delete_model(self, request: HttpRequest, obj: BusinessRule) -> None:
        business_rule_delete(rule=obj, by=request.user, reason="deleted in admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BusinessRule]) -> None:
        for rule in queryset:
            business_rule_delete(rule=rule, by=request.user, reason="deleted in admin")


class DecisionInline(admin.TabularInline[Decision, ApprovalRequest]):
    model = Decision
    fields = ("reviewer", "verdict", "arguments", "comment", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: ApprovalRequest | None = None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "agent", "tool", "kind", "status", "risk_class", "decided_by", "created_at")
    list_filter = ("status", "kind", "risk_class", "agent")
    list_select_related = ("agent", "decided_by")
    search_fields = ("tool", "policy_reason", "rationale")
    inlines = [DecisionInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "agent", "alert", "event", "status_code", "attempts", "delivered_at")


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin[AlertRule]):
    """Operators manage the alert rules; every change is audited (approvals.operations)."""

    list_display = ("name", "metric", "agent", "threshold", "window_seconds", "enabled")
    list_filter = ("metric", "enabled", "agent")
    list_select_related = ("agent",)
    readonly_fields = ("created_by", "created_at", "updated_at")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_operator(request.user)

    def has_view_permission(self, request: HttpRequest, obj: AlertRule | None = None) -> bool:
        return is_operator(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_operator(request.user)

    def has_change_permission(self, request: HttpRequest, obj: AlertRule | None = None) -> bool:
        return is_operator(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: AlertRule | None = None) -> bool:
        return is_operator(request.user)

    def save_model(self, request: HttpRequest, obj: AlertRule, form: ModelForm[AlertRule], change: bool) -> None:
        alert_rule_save(rule=obj, by=request.user, reason="changed in admin")

    def delete_model(self, request: HttpRequest, obj: AlertRule) -> None:
        alert_rule_delete(rule=obj, by=request.user, reason="deleted in admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        for rule in queryset:
            alert_rule_delete(rule=rule, by=request.user, reason="deleted in admin")


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """Alerts are written only by the evaluator (approvals.alerts)."""

    list_display = ("id", "rule", "status", "value", "fired_at", "resolved_at")
    list_filter = ("status", "rule__metric")
    list_select_related = ("rule",)
