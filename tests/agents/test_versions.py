"""Agent versions: made on every change of behaviour (and only then), diffed, immutable, recorded by
each run, which runs with its version's behaviour; the canary share; rollback."""

from __future__ import annotations

import copy
import json

import pytest

from agents import runtime
from agents.definitions import agent_upsert
from agents.demo.data import SUPPORT_AGENT
from agents.models import Agent, AgentVersion, Run, RunStatus, Ticket, ToolCall
from agents.operations import agent_set_enabled, agent_set_level
from agents.version_models import VersionImmutable
from agents.versions import (
    VersionConflict,
    VersionInvalid,
    behaviour_for_run,
    behaviour_of,
    canary_bucket,
    version_create,
    version_for_new_run,
    version_rollback,
)
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def refund_input() -> dict:
    return {"ticket_id": Ticket.objects.first().pk, "customer_email": "jane@example.com", "amount": 120}


def versions(agent: Agent) -> list[int]:
    return list(AgentVersion.objects.filter(agent=agent).order_by("number").values_list("number", flat=True))


def short_playbook() -> dict:
    """Looks the policy up and answers: no refund proposed."""
    return {
        "steps": [
            {"id": "policy", "tool": "kb_search", "arguments": {"query": "refund policy"}, "rationale": "Look."},
            {"final": {"answer": "policy checked"}},
        ]
    }


# --- Made on every behaviour change, and only then ----------------------------------------------


def test_a_definition_makes_version_1_and_a_changed_definition_version_2(support_agent):
    agent = Agent.objects.get(pk=support_agent.pk)
    [first] = AgentVersion.objects.filter(agent=agent)
    assert first.number == 1 and agent.current_version_id == first.pk
    assert first.author_name == "agent definitions" and first.reason == "created from its definition"
    assert first.behaviour["playbook"] == SUPPORT_AGENT["playbook"] and first.behaviour["max_cost"] == "1.0000"

    changed = copy.deepcopy(SUPPORT_AGENT) | {"system_prompt": "Be brief.", "max_steps": 12}
    agent, _ = agent_upsert(changed)
    assert versions(agent) == [1, 2]
    second = agent.current_version
    assert second.number == 2 and second.based_on_id == first.pk
    assert second.diff == {"system_prompt": {"old": "", "new": "Be brief."}, "max_steps": {"old": 20, "new": 12}}
    created = AuditEvent.objects.filter(action="agents.version.created").order_by("id").last()
    assert created.data["version"] == 2 and created.data["diff"] == second.diff


def test_a_change_that_is_not_behaviour_makes_no_version(support_agent, operator):
    agent_upsert(copy.deepcopy(SUPPORT_AGENT) | {"name": "Support desk", "approval_sla_seconds": 600})
    agent_set_enabled(agent=support_agent, enabled=False, user=operator, reason="pause")
    agent_upsert(copy.deepcopy(SUPPORT_AGENT) | {"name": "Support desk", "approval_sla_seconds": 600})
    assert versions(support_agent) == [1]
    assert Agent.objects.get(pk=support_agent.pk).name == "Support desk"


def test_level_and_per_tool_level_changes_make_versions_by_their_author(support_agent, operator):
    agent_set_level(agent=support_agent, level=3, user=operator, reason="a month without edits")
    agent_set_level(agent=support_agent, level=2, user=operator, reason="refunds wait", tool="issue_refund")
    agent_set_level(agent=support_agent, level=3, user=operator, reason="again")  # no change: no version
    assert versions(support_agent) == [1, 2, 3]
    v2, v3 = AgentVersion.objects.filter(agent=support_agent, number__in=[2, 3]).order_by("number")
    assert v2.diff == {"autonomy_level": {"old": 2, "new": 3}}
    assert v2.author_id == operator.pk and v2.author_name == "operator" and v2.reason == "a month without edits"
    assert v3.diff == {"tool_levels": {"old": {}, "new": {"issue_refund": 2}}}


def test_an_admin_edit_of_the_playbook_makes_one_version(client, support_agent, operator):
    operator.is_superuser = operator.is_staff = True
    operator.save()
    client.force_login(operator)
    url = f"/admin/agents/agent/{support_agent.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    for name, value in list(data.items()):
        if isinstance(value, list | dict):
            data[name] = json.dumps(value)
    data.update(playbook=json.dumps(short_playbook()), autonomy_level=3)
    refused = client.post(url, data)  # a change of behaviour says why
    assert refused.status_code == 200 and "change_reason" in refused.context["adminform"].form.errors
    assert versions(support_agent) == [1]
    response = client.post(url, data | {"change_reason": "shorter flow"})
    assert response.status_code == 302
    assert versions(support_agent) == [1, 2]
    v2 = AgentVersion.objects.get(agent=support_agent, number=2)
    assert set(v2.diff) == {"playbook", "autonomy_level"} and v2.reason == "shorter flow"
    assert v2.author_id == operator.pk


# --- Immutable ----------------------------------------------------------------------------------------


def test_a_version_cannot_be_changed_or_deleted(support_agent):
    version = AgentVersion.objects.get(agent=support_agent)
    version.reason = "rewritten"
    with pytest.raises(VersionImmutable):
        version.save()
    with pytest.raises(VersionImmutable):
        AgentVersion.objects.filter(pk=version.pk).update(reason="rewritten")
    with pytest.raises(VersionImmutable):
        version.delete()
    with pytest.raises(VersionImmutable):
        AgentVersion.objects.filter(pk=version.pk).delete()
    assert AgentVersion.objects.get(pk=version.pk).reason == "created from its definition"


def test_a_behaviour_copy_is_never_saved_over_the_row(support_agent):
    copy_ = behaviour_of(AgentVersion.objects.get(agent=support_agent))
    with pytest.raises(ValueError):
        copy_.save()


def test_a_candidate_with_bad_behaviour_is_refused_and_nothing_is_written(support_agent, operator):
    with pytest.raises(VersionInvalid) as bad_field:
        version_create(agent=support_agent, author=operator, reason="x", behaviour={"slug": "other"}, candidate=True)
    assert bad_field.value.details["errors"] == {"slug": ["not a behaviour field"]}
    with pytest.raises(VersionInvalid) as bad_value:
        version_create(agent=support_agent, author=operator, reason="x", behaviour={"tools": ["rm_rf"]}, candidate=True)
    assert "tools" in bad_value.value.details["errors"]
    assert versions(support_agent) == [1]


# --- Runs record their version and run with its behaviour ---------------------------------------


def test_a_run_records_its_version_and_runs_with_its_behaviour(support_agent, starter):
    candidate = version_create(
        agent=support_agent, author=starter, reason="shorter", behaviour={"playbook": short_playbook()}, candidate=True
    )
    support_agent.refresh_from_db()
    assert support_agent.playbook == SUPPORT_AGENT["playbook"]  # the row keeps the current behaviour
    Agent.objects.filter(pk=support_agent.pk).update(canary_share=100)
    on_candidate = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    Agent.objects.filter(pk=support_agent.pk).update(canary_share=0)
    on_current = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    for run in (on_candidate, on_current):
        runtime.run_advance(run_id=run.pk)
    on_candidate, on_current = Run.objects.get(pk=on_candidate.pk), Run.objects.get(pk=on_current.pk)
    assert on_candidate.version_id == candidate.pk and on_current.version.number == 1
    assert on_candidate.status == RunStatus.SUCCEEDED and on_candidate.result == {"answer": "policy checked"}
    assert not ToolCall.objects.filter(run=on_candidate, tool="issue_refund").exists()
    assert on_current.status == RunStatus.WAITING
    assert ToolCall.objects.filter(run=on_current, tool="issue_refund").exists()
    created = AuditEvent.objects.filter(action="agents.run.created", target_id=str(on_candidate.pk)).get()
    assert created.data["version"] == candidate.number


def test_a_level_change_mid_run_applies_to_new_runs_and_the_kill_switch_to_all(support_agent, starter, operator):
    run = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    agent_set_level(agent=support_agent, level=3, user=operator, reason="trusted")
    assert behaviour_for_run(Run.objects.get(pk=run.pk)).autonomy_level == 2
    runtime.run_advance(run_id=run.pk)
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING  # its version's level 2: the refund waits
    later = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    assert later.version.number == 2 and behaviour_for_run(later).autonomy_level == 3
    agent_set_enabled(agent=support_agent, enabled=False, user=operator, reason="stop")
    assert behaviour_for_run(Run.objects.get(pk=later.pk)).enabled is False


def test_behaviour_changed_outside_the_services_is_recorded_before_a_run_takes_it(support_agent, starter):
    Agent.objects.filter(pk=support_agent.pk).update(max_steps=3)
    support_agent.refresh_from_db()
    run = runtime.run_create(agent=support_agent, user=starter, payload=refund_input())
    assert run.version.number == 2 and run.version.diff == {"max_steps": {"old": 20, "new": 3}}
    assert run.version.author_name == "versions"


# --- The canary share -----------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0, 10, 35, 100])
def test_the_canary_share_holds_over_a_thousand_run_keys(support_agent, starter, share):
    candidate = version_create(
        agent=support_agent, author=starter, reason="c", behaviour={"max_steps": 9}, candidate=True
    )
    Agent.objects.filter(pk=support_agent.pk).update(canary_share=share)
    agent = Agent.objects.get(pk=support_agent.pk)
    picks = [version_for_new_run(agent, run_key=key).pk for key in range(1, 1001)]
    taken = picks.count(candidate.pk)
    assert abs(taken - 10 * share) <= 30, taken  # 3 points of a thousand
    assert picks == [version_for_new_run(agent, run_key=key).pk for key in range(1, 1001)]  # deterministic
    assert all(0 <= canary_bucket(agent=agent, run_key=key) < 100 for key in range(1, 50))


# --- Rollback -------------------------------------------------------------------------------------


def test_a_rollback_makes_an_earlier_version_current_again_audited(support_agent, operator, starter):
    agent_set_level(agent=support_agent, level=3, user=operator, reason="trusted")
    v1 = AgentVersion.objects.get(agent=support_agent, number=1)
    agent = version_rollback(agent=support_agent, version=v1, user=operator, reason="too many refunds")
    assert agent.current_version_id == v1.pk and agent.autonomy_level == 2
    assert versions(support_agent) == [1, 2]  # nothing new: v1 is current again
    event = AuditEvent.objects.get(action="agents.version.rolled_back")
    assert event.actor_repr == "operator"
    assert event.data == {
        "from": 2,
        "to": 1,
        "diff": {"autonomy_level": {"old": 3, "new": 2}},
        "reason": "too many refunds",
    }
    assert runtime.run_create(agent=agent, user=starter, payload=refund_input()).version_id == v1.pk
    with pytest.raises(VersionConflict):
        version_rollback(agent=agent, version=v1, user=operator, reason="again")


def test_the_data_migration_gives_each_agent_without_a_version_version_1_and_its_runs(support_agent, starter):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("agents.migrations.0012_agentversion_first_versions")
    older = Agent.objects.create(slug="older", name="Older", objective="o", scope="s", tools=["kb_search"])
    run = Run.objects.create(agent=older, input={})
    migration.first_versions(apps, None)
    older.refresh_from_db()
    [first] = AgentVersion.objects.filter(agent=older)
    assert older.current_version_id == first.pk and first.number == 1 and first.diff == {}
    assert first.behaviour["tools"] == ["kb_search"] and first.behaviour["max_cost"] == "1.0000"
    assert Run.objects.get(pk=run.pk).version_id == first.pk
    assert versions(support_agent) == [1]  # an agent with a version is left alone
    migration.first_versions(apps, None)
    assert AgentVersion.objects.filter(agent=older).count() == 1
