from __future__ import annotations

from django.urls import path

from agents import api

urlpatterns = [
    path("auth/token/", api.TokenApi.as_view(), name="api-token"),
    path("agents/", api.AgentListApi.as_view(), name="api-agents"),
    path("agents/emergency-stop/", api.EmergencyStopApi.as_view(), name="api-emergency-stop"),
    path("agents/<slug:slug>/", api.AgentDetailApi.as_view(), name="api-agent"),
    path("agents/<slug:slug>/versions/", api.AgentVersionListApi.as_view(), name="api-agent-versions"),
    path("agents/<slug:slug>/runs/", api.RunCreateApi.as_view(), name="api-run-create"),
    path("runs/<int:run_id>/", api.RunDetailApi.as_view(), name="api-run"),
    path("runs/<int:run_id>/feedback/", api.RunFeedbackApi.as_view(), name="api-run-feedback"),
    path("runs/<int:run_id>/cancel/", api.RunCancelApi.as_view(), name="api-run-cancel"),
]
