"""MCP tools as registry tools: ``server.tool`` names resolve to rows of McpTool.

Arguments are checked against the server's input schema before a call (strictly, as for the
built-in tools: what a reviewer approves is exactly what runs), the structured result against
its output schema after. The tools take no idempotency key, so the ledger never retries them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel

from agents.mcp import pool
from agents.mcp.models import McpServer, McpTool
from agents.tools import Risk, Tool, ToolArgumentsInvalid, ToolContext, ToolFailed, registry
from config.parsing import json_value_errors


class _Unused(BaseModel):
    pass


def _unused(arguments: Any, context: ToolContext) -> Any:
    raise RuntimeError("an MCP tool runs through McpRegistryTool.run")


@dataclass(frozen=True)
class McpRegistryTool(Tool):
    server: McpServer | None = None
    remote_name: str = ""
    input_json_schema: dict[str, Any] = field(default_factory=dict, compare=False)
    output_json_schema: dict[str, Any] | None = field(default=None, compare=False)

    def input_schema(self) -> dict[str, Any]:
        return self.input_json_schema

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise ToolArgumentsInvalid(self.name, {"arguments": ["must be a JSON object"]})
        problems = json_value_errors(arguments)
        if problems:
            raise ToolArgumentsInvalid(self.name, problems)
        try:
            copied: dict[str, Any] = json.loads(json.dumps(arguments, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ToolArgumentsInvalid(self.name, {"arguments": [f"must be JSON: {exc}"]}) from None
        errors = schema_errors(self.input_json_schema, copied)
        if errors:
            raise ToolArgumentsInvalid(self.name, errors)
        return copied

    def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        assert self.server is not None
        spec = server_spec(self.server)
        try:
            result = pool.call_tool(spec, self.remote_name, self.validate_arguments(arguments))
        except (pool.McpUnavailable, pool.McpAnswered) as exc:
            raise ToolFailed(str(exc)) from exc
        if result.is_error:
            raise ToolFailed(f"{self.name} reported an error: {result_text(result)[:500]}")
        if self.output_json_schema is not None:
            errors = schema_errors(self.output_json_schema, result.structured_content)
            if errors:
                raise ToolFailed(f"{self.name} answered outside its output schema: {errors}")
        return result_output(result)


def schema_errors(schema: dict[str, Any], value: Any) -> dict[str, list[str]]:
    try:
        validator = Draft202012Validator(schema)
        found = sorted(validator.iter_errors(value), key=lambda error: list(error.path))
    except SchemaError as exc:
        return {"schema": [f"the server's schema is invalid: {exc.message}"]}
    errors: dict[str, list[str]] = {}
    for error in found:
        path = ".".join(str(part) for part in error.path) or "arguments"
        errors.setdefault(path, []).append(error.message)
    return errors


def result_text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def result_output(result: types.CallToolResult) -> dict[str, Any]:
    structured = result.structured_content
    if isinstance(structured, dict):
        return structured
    if structured is not None:
        return {"result": structured}
    return {"text": result_text(result)}


def setting_value(name: str) -> str:
    value = getattr(settings, name, None) or os.environ.get(name)
    if not isinstance(value, str) or not value:
        raise pool.McpUnavailable(f"the setting {name} is not set")
    return value


def server_spec(server: McpServer) -> pool.ServerSpec:
    """The server's connection with the secrets it names read from settings, at call time."""
    env = {
        name: setting_value(value["setting"]) if isinstance(value, dict) else str(value)
        for name, value in (server.env or {}).items()
    }
    headers = {header: setting_value(setting) for header, setting in (server.headers or {}).items()}
    return pool.ServerSpec(
        slug=server.slug,
        transport=server.transport,
        command=server.command,
        args=tuple(server.args or ()),
        env=tuple(sorted(env.items())),
        url=server.url,
        headers=tuple(sorted(headers.items())),
        timeout_seconds=server.timeout_seconds,
    )


def registry_tool(row: McpTool) -> McpRegistryTool:
    risk = row.effective_risk
    return McpRegistryTool(
        name=row.qualified_name,
        description=row.description or row.name,
        input_model=_Unused,
        output_model=_Unused,
        risk=risk,
        reversible=risk in (Risk.READ, Risk.WRITE_REVERSIBLE),
        func=_unused,
        # The pool's own limits decide; the ledger's thread timeout is the backstop.
        timeout_seconds=pool.START_SECONDS + row.server.timeout_seconds + 2 * pool.MARGIN_SECONDS,
        idempotent=False,
        server=row.server,
        remote_name=row.name,
        input_json_schema=row.input_schema,
        output_json_schema=row.output_schema,
    )


# name -> (when it was read, the tool or None); short-lived, and cleared when a row changes here.
_cache: dict[str, tuple[float, Tool | None]] = {}


def cache_seconds() -> float:
    return float(getattr(settings, "MCP_TOOL_CACHE_SECONDS", 2.0))


def resolve(name: str) -> Tool | None:
    slug, dot, tool_name = name.partition(".")
    if not dot or not slug or not tool_name:
        return None
    now = time.monotonic()
    cached = _cache.get(name)
    if cached is not None and now - cached[0] < cache_seconds():
        return cached[1]
    row = (
        McpTool.objects.select_related("server")
        .filter(server__slug=slug, server__enabled=True, name=tool_name, present=True)
        .first()
    )
    tool = registry_tool(row) if row is not None else None
    _cache[name] = (now, tool)
    return tool


def names() -> list[str]:
    rows = McpTool.objects.filter(server__enabled=True, present=True).select_related("server")
    return [row.qualified_name for row in rows]


def cache_clear(**_: object) -> None:
    _cache.clear()


def install() -> None:
    """Make ``server.tool`` names known to the registry (once, when the app is ready)."""
    if resolve not in registry.sources:
        registry.sources.append(resolve)
        registry.listers.append(names)
    for model in (McpServer, McpTool):
        post_save.connect(cache_clear, sender=model, dispatch_uid=f"mcp-cache-{model.__name__}-save")
        post_delete.connect(cache_clear, sender=model, dispatch_uid=f"mcp-cache-{model.__name__}-delete")
