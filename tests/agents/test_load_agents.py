from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from agents.demo import RESEARCH_AGENT
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
