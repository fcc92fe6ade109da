from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.definitions import agent_upsert
from agents.mcp.services import mcp_server_load
from audit.services import audited_atomic


class Command(BaseCommand):
    help = (
        "Create or update agents from a JSON or YAML file (one object or a list), so deployments are "
        "reproducible. Every change is audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise CommandError(f"No such file: {path}") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                definitions = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise CommandError(f"{path} is not valid YAML: {exc}") from None
        else:
            try:
                definitions = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CommandError(f"{path} is not valid JSON: {exc}") from None
        servers: Any = []
        if isinstance(definitions, dict) and "agents" in definitions:
            # {"mcp_servers": [...], "agents": [...]}: the servers their tools come from, then the agents.
            servers, definitions = definitions.get("mcp_servers") or [], definitions["agents"]
        if isinstance(definitions, dict):
            definitions = [definitions]
        if not isinstance(definitions, list) or not all(isinstance(d, dict) and d.get("slug") for d in definitions):
            raise CommandError("Expected an agent object with a slug, or a list of them.")
        if isinstance(servers, list):
            # An agent may also declare the servers its tools come from.
            servers = servers + [server for d in definitions for server in d.pop("mcp_servers", None) or []]
        if not isinstance(servers, list) or not all(isinstance(s, dict) and s.get("slug") for s in servers):
            raise CommandError("mcp_servers: expected a list of server objects with a slug.")
        done = []
        # All or nothing: one bad definition leaves every agent as it was.
        with audited_atomic():
            for server in servers:
                try:
                    done += mcp_server_load(server, actor=f"load_agents {path.name}")
                except ValidationError as exc:
                    raise CommandError(f"MCP server {server['slug']}: {exc.message_dict}") from None
                except Exception as exc:  # noqa: BLE001 - its tools could not be listed
                    raise CommandError(f"MCP server {server['slug']}: {type(exc).__name__}: {exc}") from None
            for definition in definitions:
                try:
                    agent, created = agent_upsert(definition, actor=f"load_agents {path.name}")
                except ValidationError as exc:
                    raise CommandError(f"Agent {definition['slug']}: {exc.message_dict}") from None
                done.append(f"{'created' if created else 'updated'} agent {agent.slug}")
        for line in done:
            self.stdout.write(line)
