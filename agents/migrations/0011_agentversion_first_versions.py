"""Every existing agent gets version 1 from its current fields; its runs ran that behaviour."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import migrations

# agents.versions.BEHAVIOUR_FIELDS when this migration was written (a migration does not import app code).
BEHAVIOUR_FIELDS = (
    "objective",
    "scope",
    "tools",
    "autonomy_level",
    "tool_levels",
    "reasoner",
    "playbook",
    "system_prompt",
    "llm_model",
    "temperature",
    "max_tokens",
    "tool_choice",
    "max_steps",
    "max_cost",
    "max_wall_seconds",
    "on_reject",
)


def first_versions(apps: Any, schema_editor: Any) -> None:
    Agent = apps.get_model("agents", "Agent")
    AgentVersion = apps.get_model("agents", "AgentVersion")
    Run = apps.get_model("agents", "Run")
    for agent in Agent.objects.filter(current_version__isnull=True):
        behaviour = {}
        for name in BEHAVIOUR_FIELDS:
            value = getattr(agent, name)
            behaviour[name] = str(value) if isinstance(value, Decimal) else value
        # The historical model has the plain manager: this insert is the version's only write.
        version = AgentVersion.objects.create(
            agent=agent, number=1, behaviour=behaviour, diff={}, author_name="versions", reason="the first version"
        )
        Agent.objects.filter(pk=agent.pk).update(current_version=version)
        Run.objects.filter(agent=agent, version__isnull=True).update(version=version)


class Migration(migrations.Migration):
    dependencies = [("agents", "0010_agentversion")]

    operations = [migrations.RunPython(first_versions, migrations.RunPython.noop)]
