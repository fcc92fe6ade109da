from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from agents.demo.data import RESEARCH_AGENT
from agents.models import Agent

pytestmark = pytest.mark.django_db


def test_load_creates_then_updates(tmp_path):
    path = tmp_path / "agents.json"
    path.write_text(json.dumps([RESEARCH_AGENT]))
    call_command("load_agents", str(path))
    assert Agent.objects.get(slug="research").tools == ["kb_search"]
    path.write_text(json.dumps({**RESEARCH_AGENT, "name": "Researcher"}))
    call_command("load_agents", str(path))
    assert Agent.objects.get(slug="research").name == "Researcher"


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"slug": "x", "name": "x", "objective": "o", "scope": "s", "tools": ["rm_rf"]}), "Unknown tools"),
        (json.dumps({"slug": "x", "colour": "red"}), "Unknown fields"),
        (
            json.dumps(
                {
                    "slug": "x",
                    "name": "x",
                    "objective": "o",
                    "scope": "s",
                    "tools": ["issue_refund"],
                    "autonomy_level": 5,
                }
            ),
            "Level 5",
        ),
        (json.dumps([{"no": "slug"}]), "slug"),
    ],
)
def test_bad_files_are_refused_and_change_nothing(tmp_path, content, message):
    path = tmp_path / "agents.json"
    path.write_text(
        json.dumps([RESEARCH_AGENT])[:-1] + ", " + content + "]" if content.startswith('{"slug"') else content
    )
    with pytest.raises(CommandError, match=message):
        call_command("load_agents", str(path))
    assert not Agent.objects.exists()


def test_yaml_definitions_load_and_every_change_is_audited(tmp_path):
    from audit.models import AuditEvent

    path = tmp_path / "agents.yaml"
    path.write_text(
        "- slug: triage\n"
        "  name: Triage\n"
        "  objective: Sort incoming tickets\n"
        "  scope: Reads the knowledge base only\n"
        "  tools: [kb_search]\n"
        "  autonomy_level: 4\n"
    )
    call_command("load_agents", str(path))
    agent = Agent.objects.get(slug="triage")
    assert agent.tools == ["kb_search"] and agent.autonomy_level == 4
    created = AuditEvent.objects.get(action="agents.agent.created", target_id=str(agent.pk))
    assert created.actor_repr == "load_agents agents.yaml"
    call_command("load_agents", str(path))  # unchanged: nothing to record
    assert not AuditEvent.objects.filter(action="agents.agent.updated").exists()
    path.write_text(path.read_text().replace("autonomy_level: 4", "autonomy_level: 2"))
    call_command("load_agents", str(path))
    updated = AuditEvent.objects.get(action="agents.agent.updated")
    assert updated.data["changes"] == {"autonomy_level": {"old": 4, "new": 2}}


def test_malformed_yaml_is_refused(tmp_path):
    path = tmp_path / "agents.yml"
    path.write_text("- slug: [unclosed\n")
    with pytest.raises(CommandError, match="not valid YAML"):
        call_command("load_agents", str(path))
    assert not Agent.objects.filter(slug="unclosed").exists()
