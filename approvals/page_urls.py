from __future__ import annotations

from django.urls import path

from approvals import views

urlpatterns = [
    path("inbox/", views.inbox, name="inbox"),
    path("inbox/bulk/", views.inbox_bulk, name="inbox-bulk"),
    path("inbox/<int:approval_id>/", views.inbox_detail, name="inbox-detail"),
    path("console/", views.console, name="console"),
    path("console/agents/<slug:slug>/level/", views.console_agent_level, name="console-agent-level"),
    path("console/agents/<slug:slug>/enabled/", views.console_agent_enabled, name="console-agent-enabled"),
    path("console/emergency-stop/", views.console_emergency_stop, name="console-emergency-stop"),
    path("console/rules/new/", views.console_rule, name="console-rule-new"),
    path("console/rules/<int:rule_id>/", views.console_rule, name="console-rule"),
    path("console/rules/<int:rule_id>/delete/", views.console_rule_delete, name="console-rule-delete"),
    path("console/assignments/", views.console_assignment, name="console-assignment"),
    path("runs/<int:run_id>/", views.run_trace, name="run-trace"),
    path("runs/<int:run_id>/trace.json", views.run_trace_json, name="run-trace-json"),
]
