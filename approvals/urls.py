from __future__ import annotations

from django.urls import path

from approvals import analytics_api, api

urlpatterns = [
    path("alerts/", api.AlertListApi.as_view(), name="api-alerts"),
    path("approvals/", api.ApprovalListApi.as_view(), name="api-approvals"),
    path("approvals/decisions/", api.BulkDecisionApi.as_view(), name="api-approvals-bulk"),
    path("approvals/<int:approval_id>/", api.ApprovalDetailApi.as_view(), name="api-approval"),
    path("approvals/<int:approval_id>/decision/", api.ApprovalDecisionApi.as_view(), name="api-approval-decision"),
    path("reviewers/stats/", analytics_api.ReviewerStatsApi.as_view(), name="api-reviewer-stats"),
    path("agents/<slug:slug>/advice/", analytics_api.AgentAdviceApi.as_view(), name="api-agent-advice"),
]
