"""The admin of MCP servers (register, list their tools) and their tools (set the risk)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from agents.mcp.models import McpServer, McpTool
from agents.mcp.services import SERVER_FIELDS, mcp_server_upsert, mcp_tool_risk_set, mcp_tools_list
from config.admin_base import CHECKED_JSON_FIELDS


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin[McpServer]):
    formfield_overrides = CHECKED_JSON_FIELDS
    list_display = ("slug", "transport", "enabled", "timeout_seconds", "tool_count", "updated_at")
    list_filter = ("transport", "enabled")
    search_fields = ("slug", "command", "url")
    fields = ("slug", *SERVER_FIELDS)
    actions = ["list_tools"]

    @admin.display(description="tools")
    def tool_count(self, obj: McpServer) -> int:
        return obj.tools.filter(present=True).count()

    def get_readonly_fields(self, request: HttpRequest, obj: McpServer | None = None) -> tuple[str, ...]:
        return ("slug",) if obj is not None else ()  # the namespace agents' tool names use

    def save_model(self, request: HttpRequest, obj: McpServer, form: forms.ModelForm[McpServer], change: bool) -> None:
        definition = {"slug": obj.slug, **{name: getattr(obj, name) for name in SERVER_FIELDS}}
        saved, _ = mcp_server_upsert(definition, actor=request.user)
        obj.pk = saved.pk

    @admin.action(description="List tools (connect and store their schemas)", permissions=["change"])
    def list_tools(self, request: HttpRequest, queryset: QuerySet[McpServer]) -> None:
        for server in queryset:
            try:
                listing = mcp_tools_list(server=server, actor=request.user)
            except Exception as exc:  # noqa: BLE001 - shown to the operator, who fixes the server
                self.message_user(request, f"{server.slug}: {type(exc).__name__}: {exc}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"{server.slug}: {len(listing.added)} added, {len(listing.changed)} changed (risk to set again), "
                f"{len(listing.removed)} gone, {len(listing.unchanged)} unchanged.",
                messages.SUCCESS,
            )


class McpToolForm(forms.ModelForm[McpTool]):
    change_reason = forms.CharField(required=False, max_length=500, help_text="Recorded in the audit log.")

    class Meta:
        model = McpTool
        fields = ("risk",)


@admin.register(McpTool)
class McpToolAdmin(admin.ModelAdmin[McpTool]):
    form = McpToolForm
    list_display = ("__str__", "risk_shown", "read_only_hint", "destructive_hint", "present", "listed_at")
    list_filter = ("server", "risk", "present")
    list_select_related = ("server",)
    search_fields = ("name", "server__slug")
    readonly_fields = (
        "server",
        "name",
        "description",
        "annotations",
        "input_schema",
        "output_schema",
        "present",
        "listed_at",
    )
    fields = ("risk", "change_reason", *readonly_fields)

    @admin.display(description="risk")
    def risk_shown(self, obj: McpTool) -> str:
        return obj.risk or "not set (write_irreversible)"

    @admin.display(description="readOnlyHint")
    def read_only_hint(self, obj: McpTool) -> Any:
        return obj.annotations.get("read_only_hint", "")

    @admin.display(description="destructiveHint")
    def destructive_hint(self, obj: McpTool) -> Any:
        return obj.annotations.get("destructive_hint", "")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tools come from listing their server

    def save_model(self, request: HttpRequest, obj: McpTool, form: forms.ModelForm[McpTool], change: bool) -> None:
        try:
            mcp_tool_risk_set(
                tool=obj,
                risk=form.cleaned_data.get("risk") or None,
                actor=request.user,
                reason=form.cleaned_data.get("change_reason", ""),
            )
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
