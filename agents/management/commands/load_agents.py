from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.demo import agent_upsert


class Command(BaseCommand):
    help = "Create or update agents from a JSON file (one object or a list), so deployments are reproducible."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", type=Path)

    def handle(self, *args, path: Path, **options) -> None:
        try:
            definitions = json.loads(path.read_text())
        except FileNotFoundError:
            raise CommandError(f"No such file: {path}") from None
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from None
        if isinstance(definitions, dict):
            definitions = [definitions]
        if not isinstance(definitions, list) or not all(isinstance(d, dict) and d.get("slug") for d in definitions):
            raise CommandError("Expected an agent object with a slug, or a list of them.")
        done = []
        # All or nothing: one bad definition leaves every agent as it was.
        with transaction.atomic():
            for definition in definitions:
                try:
                    agent, created = agent_upsert(definition)
                except ValidationError as exc:
                    raise CommandError(f"Agent {definition['slug']}: {exc.message_dict}") from None
                done.append(f"{'created' if created else 'updated'} agent {agent.slug}")
        for line in done:
            self.stdout.write(line)
