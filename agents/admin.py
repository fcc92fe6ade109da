from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from guardian.admin import GuardedModelAdmin

from agents.models import Agent, KnowledgeArticle, LedgerEntry, OutboxEmail, Run, Step, Ticket, ToolCall
from agents.operations import agent_set_enabled, agent_set_level
from agents.versions import BEHAVIOUR_FIELDS, version_create
from approvals.grants import grants_by
from audit.services import audit_record, audited_atomic
from config.admin_base import CHECKED_JSON_FIELDS, ReadOnlyAdmin

AUDITED_FIELDS = ("autonomy_level", "tool_levels", "enabled", "tools")
# Changed only through agents.operations, never by saving the form.
OPERATOR_SETTINGS = ("autonomy_level", "tool_levels", "enabled")


class AgentAdminForm(forms.ModelForm[Agent]):
    change_reason = forms.CharField(
        required=False,
        max_length=1000,
        help_text="Required when the behaviour (a new version) or the kill switch changes; audited.",
    )

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "objective",
            "scope",
            "owner",
            "enabled",
            "autonomy_level",
            "tools",
            "tool_levels",
            "input_schema",
            "reasoner",
            "playbook",
            "system_prompt",
            "llm_model",
            "temperature",
            "max_tokens",
            "tool_choice",
            "max_steps",
            "max_cost",
            "max_wall_seconds",
            "on_reject",
            "escalation_group",
            "approval_sla_seconds",
            "approval_deadline_seconds",
            "expiry_action",
            "webhook_url",
            "webhook_secret",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        changed = [name for name in dict.fromkeys([*AUDITED_FIELDS, *BEHAVIOUR_FIELDS]) if name in self.changed_data]
        if self.instance.pk and changed and not cleaned.get("change_reason"):
            self.add_error("change_reason", f"Say why {', '.join(changed)} changed.")
        return cleaned


@admin.register(Agent)
class AgentAdmin(GuardedModelAdmin):
    form = AgentAdminForm
    formfield_overrides = CHECKED_JSON_FIELDS
    list_display = ("slug", "name", "autonomy_level", "enabled", "reasoner", "updated_at")
    list_filter = ("enabled", "autonomy_level", "reasoner")
    search_fields = ("slug", "name")

    # Guardian's object-permission pages would let any staff user who may change agents grant
    # review and start rights unaudited; grants go through the console (audited) instead.
    def obj_perms_manage_view(self, request: HttpRequest, object_pk: str) -> HttpResponse:
        self._superuser_only(request)
        response: HttpResponse = super().obj_perms_manage_view(request, object_pk)  # type: ignore[no-untyped-call]  # guardian: unannotated
        return response

    # What these pages grant is recorded as granted by the superuser at work (approvals.grants):
    # a review right they give themselves, or their own group, does not let them decide.
    def obj_perms_manage_user_view(self, request: HttpRequest, object_pk: str, user_id: str) -> HttpResponse:
        self._superuser_only(request)
        with grants_by(request.user):
            response: HttpResponse = super().obj_perms_manage_user_view(request, object_pk, user_id)  # type: ignore[no-untyped-call]  # guardian: unannotated
        return response

    def obj_perms_manage_group_view(self, request: HttpRequest, object_pk: str, group_id: str) -> HttpResponse:
        self._superuser_only(request)
        with grants_by(request.user):
            response: HttpResponse = super().obj_perms_manage_group_view(request, object_pk, group_id)  # type: ignore[no-untyped-call]  # guardian: unannotated
        return response

    @staticmethod
    def _superuser_only(request: HttpRequest) -> None:
        if not request.user.is_superuser:
            raise PermissionDenied("Reviewer and start rights are granted in the console, where they are audited.")

    def save_model(self, request: HttpRequest, obj: Agent, form: AgentAdminForm, change: bool) -> None:
        if not change:
            with audited_atomic():
                super().save_model(request, obj, form, change)
                audit_record(
                    actor=request.user,
                    action="agents.agent.created",
                    target=obj,
                    data={"tools": obj.tools, "autonomy_level": obj.autonomy_level},
                )
                version_create(agent=obj, author=request.user, reason="created in the admin")
            return
        # Levels and the kill switch go through the operator services the console and the API
        # call, so the admin validates, stops runs and audits exactly as they do.
        reason = form.cleaned_data.get("change_reason", "")
        with audited_atomic():
            old = Agent.objects.select_for_update(no_key=True).get(pk=obj.pk)
            wanted = {name: getattr(obj, name) for name in OPERATOR_SETTINGS}
            for name in OPERATOR_SETTINGS:
                setattr(obj, name, getattr(old, name))
            super().save_model(request, obj, form, change)
            if "tools" in form.changed_data:
                audit_record(
                    actor=request.user,
                    action="agents.agent.updated",
                    target=obj,
                    data={"changes": {"tools": {"old": old.tools, "new": obj.tools}}, "reason": reason},
                )
            user = request.user
            agent_set_level(agent=obj, level=wanted["autonomy_level"], user=user, reason=reason)
            for tool in sorted(set(old.tool_levels) | set(wanted["tool_levels"])):
                level = wanted["tool_levels"].get(tool)
                if level != old.tool_levels.get(tool):
                    agent_set_level(agent=obj, level=level, user=user, reason=reason, tool=tool)
            agent_set_enabled(agent=obj, enabled=wanted["enabled"], user=user, reason=reason)
            # The rest of the behaviour saved by the form (a level change above made it a version already).
            version_create(agent=obj, author=user, reason=reason)
            obj.refresh_from_db()


class StepInline(admin.TabularInline[Step, Run]):
    model = Step
    fields = ("index", "kind", "verdict", "verdict_reason", "error", "latency_ms", "cost")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("id", "agent", "status", "started_by", "step_count", "cost", "created_at")
    list_filter = ("status", "agent")
    list_select_related = ("agent", "started_by")
    date_hierarchy = "created_at"
    inlines = [StepInline]


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "step", "tool", "status", "verdict", "attempts", "created_at")
    list_filter = ("status", "tool")
    list_select_related = ("run",)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "amount", "currency", "ticket", "reason", "created_at")


@admin.register(OutboxEmail)
class OutboxEmailAdmin(ReadOnlyAdmin):
    list_display = ("id", "to", "subject", "created_at")


admin.site.register(Ticket)
admin.site.register(KnowledgeArticle)
