from __future__ import annotations

from django.urls import path

from audit import api

urlpatterns = [
    path("audit/events/", api.AuditEventListApi.as_view(), name="api-audit-events"),
    path("audit/head/", api.AuditHeadApi.as_view(), name="api-audit-head"),
    path("audit/events/<str:event_id>/proof/", api.AuditEventProofApi.as_view(), name="api-audit-event-proof"),
]
