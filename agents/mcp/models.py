"""Registered MCP servers and the tools they listed; the operator sets each tool's risk."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from agents.tools import Risk

# The slug is the tools' namespace (``server.tool``): no dot, so a name splits in one way.
SLUG_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"
SETTING_PATTERN = r"^[A-Z][A-Z0-9_]{0,99}$"
SETTING_NAME = re.compile(SETTING_PATTERN)


class McpServer(models.Model):
    class Transport(models.TextChoices):
        STDIO = "stdio", "a local command (stdio)"
        HTTP = "http", "streamable HTTP"

    slug = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(SLUG_PATTERN, "Lower-case letters, digits, - and _, starting with a letter.")],
        help_text="The namespace of its tools: <slug>.<tool>.",
    )
    transport = models.CharField(max_length=10, choices=Transport.choices, default=Transport.STDIO)
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the executable to start.")
    args = models.JSONField(default=list, blank=True, help_text='stdio: its arguments, e.g. ["--db-path", "x.db"].')
    env = models.JSONField(
        default=dict,
        blank=True,
        help_text='stdio: environment, {"NAME": "value"} or {"NAME": {"setting": "SETTING_NAME"}} for a secret.',
    )
    url = models.URLField(max_length=500, blank=True, help_text="http: the streamable-HTTP endpoint.")
    headers = models.JSONField(
        default=dict,
        blank=True,
        help_text='http: {"Header-Name": "SETTING_NAME"}: the value is read from that setting or '
        "environment variable, never stored here.",
    )
    enabled = models.BooleanField(default=True, help_text="Off: its tools are unknown to agents.")
    timeout_seconds = models.FloatField(
        default=30.0, validators=[MinValueValidator(0.1), MaxValueValidator(600)], help_text="Per tool call."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.transport == self.Transport.STDIO and not self.command:
            errors["command"] = ["A stdio server needs a command."]
        if self.transport == self.Transport.HTTP and not self.url:
            errors["url"] = ["An HTTP server needs a URL."]
        if not isinstance(self.args, list) or not all(isinstance(arg, str) for arg in self.args):
            errors["args"] = ["A list of strings."]
        env_problems = _env_problems(self.env)
        if env_problems:
            errors["env"] = env_problems
        if not isinstance(self.headers, dict) or not all(
            isinstance(name, str) and isinstance(setting, str) and SETTING_NAME.match(setting)
            for name, setting in self.headers.items()
        ):
            errors["headers"] = ['{"Header-Name": "SETTING_NAME"}: the name of a setting, never the value.']
        if errors:
            raise ValidationError(errors)


def _env_problems(env: Any) -> list[str]:
    if not isinstance(env, dict):
        return ["An object of environment variables."]
    problems = []
    for name, value in env.items():
        setting = value.get("setting") if isinstance(value, dict) else None
        if isinstance(value, str) or (isinstance(setting, str) and SETTING_NAME.match(setting)):
            continue
        problems.append(f"{name}: a string, or {{'setting': 'SETTING_NAME'}}.")
    return problems


class McpTool(models.Model):
    """A tool as its server listed it. ``risk`` stays null until the operator sets it; until
    then the tool counts as write_irreversible, whatever its annotations say."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict)
    output_schema = models.JSONField(null=True, blank=True)
    annotations = models.JSONField(default=dict, blank=True, help_text="The server's hints; they never set the risk.")
    risk = models.CharField(
        max_length=20,
        choices=[(risk, risk) for risk in Risk.CHOICES],
        null=True,
        blank=True,
        help_text="Set by an operator; empty counts as write_irreversible.",
    )
    listed_at = models.DateTimeField()
    # False when the last listing no longer had it: the name stays unknown to agents.
    present = models.BooleanField(default=True)

    class Meta:
        ordering = ["server__slug", "name"]
        verbose_name = "MCP tool"
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="mcp_tool_unique_per_server")]

    def __str__(self) -> str:
        return self.qualified_name

    @property
    def qualified_name(self) -> str:
        return f"{self.server.slug}.{self.name}"

    @property
    def effective_risk(self) -> str:
        return self.risk or Risk.WRITE_IRREVERSIBLE
