"""Operator changes to MCP servers and tools: register a server, list its tools, set a risk. Audited."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.utils import timezone

from agents.mcp import pool
from agents.mcp.models import McpServer, McpTool
from agents.mcp.tools import server_spec
from agents.models import Agent
from agents.tools import Risk
from audit.services import Actor, audit_record, audited_atomic

SERVER_FIELDS = ("transport", "command", "args", "env", "url", "headers", "enabled", "timeout_seconds")
# The ledger's and the audit log's tool columns, and the permission codename (use_<name>), hold 100.
MAX_QUALIFIED_NAME = 96
# What an operator judged when setting the risk: if any of it changes, the risk is asked again.
JUDGED_FIELDS = ("description", "input_schema", "output_schema", "annotations")


@dataclass
class Listing:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # names too long to be stored


def mcp_server_upsert(definition: dict[str, Any], *, actor: Actor) -> tuple[McpServer, bool]:
    """Create or update a server from a definition (the admin's fields, or YAML); audited."""
    unknown = sorted(set(definition) - {"slug", *SERVER_FIELDS})
    if unknown:
        raise ValidationError({"__all__": [f"Unknown MCP server fields: {', '.join(unknown)}."]})
    with audited_atomic():
        server = McpServer.objects.select_for_update().filter(slug=definition.get("slug")).first()
        created = server is None
        server = server or McpServer(slug=definition.get("slug", ""))
        changes = {
            key: {"old": getattr(server, key), "new": definition[key]}
            for key in SERVER_FIELDS
            if key in definition and (created or getattr(server, key) != definition[key])
        }
        for key, value in definition.items():
            setattr(server, key, value)
        server.full_clean()
        server.save()
        if created or changes:
            action = "agents.mcp_server.created" if created else "agents.mcp_server.updated"
            audit_record(actor=actor, action=action, target=server, data={"changes": changes})
    return server, created


def mcp_tools_list(*, server: McpServer, actor: Actor) -> Listing:
    """Connect, list the server's tools and store them. A new tool has no risk (it counts as
    write_irreversible); a tool whose schema, description or annotations changed loses its risk."""
    listed = pool.list_tools(server_spec(server))
    now = timezone.now()
    listing = Listing()
    with audited_atomic():
        existing = {tool.name: tool for tool in McpTool.objects.select_for_update().filter(server=server)}
        for remote in listed:
            if len(f"{server.slug}.{remote.name}") > MAX_QUALIFIED_NAME:
                listing.skipped.append(remote.name[:200])
                continue
            values = {
                "description": remote.description or "",
                "input_schema": remote.input_schema,
                "output_schema": remote.output_schema,
                "annotations": remote.annotations.model_dump(mode="json", exclude_none=True)
                if remote.annotations
                else {},
            }
            row = existing.pop(remote.name, None)
            if row is None:
                row = McpTool.objects.create(server=server, name=remote.name, listed_at=now, **values)
                listing.added.append(row.qualified_name)
            else:
                changed = [key for key in JUDGED_FIELDS if getattr(row, key) != values[key]] or (
                    ["present"] if not row.present else []
                )
                for key, value in values.items():
                    setattr(row, key, value)
                if changed:
                    listing.changed.append(row.qualified_name)
                    row.risk = None
                else:
                    listing.unchanged.append(row.qualified_name)
                row.listed_at, row.present = now, True
                row.save()
            mcp_tool_permission_ensure(row)
        for row in existing.values():
            if row.present:
                row.present = False
                row.save(update_fields=["present"])
                listing.removed.append(row.qualified_name)
        audit_record(
            actor=actor,
            action="agents.mcp_server.tools_listed",
            target=server,
            data={
                "added": listing.added,
                "changed": listing.changed,
                "removed": listing.removed,
                "skipped": listing.skipped,
            },
        )
    return listing


def mcp_tool_risk_set(*, tool: McpTool, risk: str | None, actor: Actor, reason: str = "") -> bool:
    """The operator's risk class for one tool; its annotations are shown, never applied."""
    if risk is not None and risk not in Risk.CHOICES:
        raise ValidationError({"risk": [f"One of {', '.join(Risk.CHOICES)}, or empty."]})
    with audited_atomic():
        locked = McpTool.objects.select_for_update().select_related("server").get(pk=tool.pk)
        if locked.risk == risk:
            return False
        old = locked.risk
        locked.risk = risk
        locked.save(update_fields=["risk"])
        audit_record(
            actor=actor,
            action="agents.mcp_tool.risk_changed",
            target=locked,
            data={
                "tool": locked.qualified_name,
                "old": old,
                "new": risk,
                "annotations": locked.annotations,
                "reason": reason,
            },
        )
    tool.risk = risk
    return True


def mcp_tool_permission_ensure(row: McpTool) -> None:
    # As for the built-in tools (agents.apps): a run may call it only for a user who may.
    Permission.objects.get_or_create(
        content_type=ContentType.objects.get_for_model(Agent),
        codename=f"use_{row.qualified_name}",
        defaults={"name": f"Can have agents call {row.qualified_name}"[:255]},
    )


def mcp_server_load(entry: dict[str, Any], *, actor: Actor) -> list[str]:
    """A server from an agent definition file: register it, list its tools, set the risks it
    names (``risks: {tool: risk}``). Returns what it did."""
    definition = dict(entry)
    risks = definition.pop("risks", None) or {}
    if not isinstance(risks, dict):
        raise ValidationError({"risks": ["A mapping of tool name to risk class."]})
    server, created = mcp_server_upsert(definition, actor=actor)
    listing = mcp_tools_list(server=server, actor=actor)
    tools = {tool.name: tool for tool in McpTool.objects.filter(server=server, present=True)}
    unknown = sorted(set(risks) - set(tools))
    if unknown:
        raise ValidationError({"risks": [f"{server.slug} lists no tool {', '.join(unknown)}."]})
    for name, risk in risks.items():
        mcp_tool_risk_set(tool=tools[name], risk=risk, actor=actor, reason="agent definition file")
    return [
        f"{'created' if created else 'updated'} MCP server {server.slug}: {len(tools)} tool(s), "
        f"{len(listing.added)} new, {len(risks)} risk(s) set"
    ]
