from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from audit.chain import HASHED_FIELDS, chain_hash, content_hash
from audit.models import AuditEvent
from audit.permissions import is_auditor
from audit.selectors import audit_head


class ActorFilter(admin.SimpleListFilter):
    """Events of one actor (user name, ``agent:<slug>``, ``policy``, ``anonymous`` ...).

    Offers the actors of the latest RECENT_EVENTS events: a DISTINCT over the whole log (the
    plain field filter) would scan it on every page view. Any actor can still be given in the
    URL (``?actor=name``), and the search box matches actors too.
    """

    title = "actor"
    parameter_name = "actor"
    RECENT_EVENTS = 10_000

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        recent = AuditEvent.objects.order_by("-id").values("pk")[: self.RECENT_EVENTS]
        actors = set(
            AuditEvent.objects.filter(pk__in=recent).order_by().values_list("actor_repr", flat=True).distinct()
        )
        value = self.value()
        if value:
            actors.add(value)
        return [(actor, actor) for actor in sorted(actors) if actor]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(actor_repr=self.value())
        return queryset


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Read-only for everyone, superusers included; visible to auditors and superusers."""

    list_display = [
        "id",
        "place",
        "created_at",
        "action",
        "actor_repr",
        "actor_type",
        "target",
        "agent_slug",
        "run_link",
    ]
    list_display_links = ["id", "action"]
    list_filter = ["action", "actor_type", ActorFilter, "agent_slug"]
    date_hierarchy = "created_at"
    search_fields = ["action", "actor_repr", "target_repr", "=target_id", "agent_slug", "=hash", "=sequence"]
    list_per_page = 100
    # A count(*) of a long log on every page view is not worth its cost.
    show_full_result_count = False
    actions = None
    fieldsets = [
        (None, {"fields": ["id", "created_at", "action", "run_links"]}),
        ("Who", {"fields": ["actor_type", "actor_id", "actor_repr"]}),
        ("What", {"fields": ["target_type", "target_id", "target_repr", "agent_slug"]}),
        ("Data", {"fields": ["data_pretty"]}),
        ("Chain", {"fields": ["place", "content_hash", "prev_hash", "hash", "integrity"]}),
    ]
    readonly_fields = [
        "id",
        "created_at",
        "action",
        "run_links",
        "actor_type",
        "actor_id",
        "actor_repr",
        "target_type",
        "target_id",
        "target_repr",
        "agent_slug",
        "data_pretty",
        "place",
        "content_hash",
        "prev_hash",
        "hash",
        "integrity",
    ]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_staff and is_auditor(request.user)

    def has_view_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return request.user.is_staff and is_auditor(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "audit_head": audit_head()}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.display(description="target")
    def target(self, event: AuditEvent) -> str:
        if not event.target_type:
            return "-"
        return f"{event.target_type} {event.target_id}: {event.target_repr}"

    @admin.display(description="run", ordering="run_id")
    def run_link(self, event: AuditEvent) -> str:
        if event.run_id is None:
            return "-"
        return format_html('<a href="/runs/{}/">run {}</a>', event.run_id, event.run_id)

    @admin.display(description="run")
    def run_links(self, event: AuditEvent) -> str:
        if event.run_id is None:
            return "-"
        events = reverse("admin:audit_auditevent_changelist") + f"?run_id={event.run_id}"
        return format_html(
            '<a href="/runs/{}/">trace of run {}</a> · <a href="{}">every audit event of this run</a>',
            event.run_id,
            event.run_id,
            events,
        )

    @admin.display(description="data")
    def data_pretty(self, event: AuditEvent) -> str:
        text = json.dumps(event.data, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre style="white-space: pre-wrap; margin: 0;">{}</pre>', text)

    @admin.display(description="sequence", ordering="sequence")
    def place(self, event: AuditEvent) -> str:
        # A pending event is written and committed; the sealer gives it its place within a second or so.
        return str(event.sequence) if event.sealed else "pending"

    @admin.display(description="integrity")
    def integrity(self, event: AuditEvent) -> str:
        # This event alone: its stored content against its stored hashes. manage.py
        # audit_verify checks the links between all events and the checkpoints as well.
        fields = {name: getattr(event, name) for name in HASHED_FIELDS}
        if event.content_hash and content_hash(fields=fields) != event.content_hash:
            return format_html("<strong>content does not match the hash it was written with</strong>")
        if not event.sealed or event.prev_hash is None:
            return "pending: content matches the hash it was written with" if event.content_hash else "pending"
        recomputed = chain_hash(prev_hash=event.prev_hash, fields=fields)
        if recomputed == event.hash:
            return "content matches its hash"
        return format_html("<strong>content does not match its hash</strong> (recomputed {})", recomputed)
