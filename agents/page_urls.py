from __future__ import annotations

from django.urls import path

from agents.views import console, dashboard, evaluation, reviewers, runs, trace, versions, whatif

urlpatterns = [
    path("console/", console.console, name="console"),
    path("console/agents/<slug:slug>/level/", console.console_agent_level, name="console-agent-level"),
    path("console/agents/<slug:slug>/enabled/", console.console_agent_enabled, name="console-agent-enabled"),
    path("console/agents/<slug:slug>/versions/", versions.agent_versions, name="console-agent-versions"),
    path(
        "console/agents/<slug:slug>/versions/rollback/",
        versions.agent_version_rollback,
        name="console-agent-version-rollback",
    ),
    path(
        "console/agents/<slug:slug>/versions/candidate/",
        versions.agent_version_candidate,
        name="console-agent-version-candidate",
    ),
    path("console/agents/<slug:slug>/canary/", versions.agent_canary_start, name="console-agent-canary"),
    path(
        "console/agents/<slug:slug>/canary/promote/",
        versions.agent_canary_decide,
        {"move": "promote"},
        name="console-agent-canary-promote",
    ),
    path(
        "console/agents/<slug:slug>/canary/rollback/",
        versions.agent_canary_decide,
        {"move": "rollback"},
        name="console-agent-canary-rollback",
    ),
    path("console/reviewers/", reviewers.console_reviewers, name="console-reviewers"),
    path("console/emergency-stop/", console.console_emergency_stop, name="console-emergency-stop"),
    path("console/rules/new/", console.console_rule, name="console-rule-new"),
    path("console/rules/<int:rule_id>/", console.console_rule, name="console-rule"),
    path("console/rules/<int:rule_id>/delete/", console.console_rule_delete, name="console-rule-delete"),
    path("console/assignments/", console.console_assignment, name="console-assignment"),
    path("console/agents/<slug:slug>/whatif/", whatif.console_agent_whatif, name="console-agent-whatif"),
    path("console/rules/whatif/", whatif.console_rule_whatif, name="console-rule-whatif"),
    path("console/evaluations/", evaluation.evaluations, name="console-evaluations"),
    path("console/evaluations/start/", evaluation.evaluation_start, name="console-evaluation-start"),
    path("console/evaluations/compare/", evaluation.evaluation_compare, name="console-evaluation-compare"),
    path("console/evaluations/<int:eval_run_id>/", evaluation.evaluation_detail, name="console-evaluation"),
    path("console/agents/<slug:slug>/dataset-from-runs/", evaluation.dataset_pick, name="console-dataset-pick"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/agents/<slug:slug>/", dashboard.dashboard_agent, name="dashboard-agent"),
    path("runs/", runs.run_list, name="run-list"),
    path("runs/<int:run_id>/", trace.run_trace, name="run-trace"),
    path("runs/<int:run_id>/feedback/", trace.run_feedback, name="run-feedback"),
    path("runs/<int:run_id>/trace.json", trace.run_trace_json, name="run-trace-json"),
]
