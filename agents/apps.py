from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def create_tool_permissions(sender: AppConfig, **kwargs: object) -> None:
    """One global permission per registered tool (``agents.use_<tool>``): a run may make a
    call only if the user who started it holds the permission for that tool."""
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    from agents.models import Agent
    from agents.tools import registry

    content_type = ContentType.objects.get_for_model(Agent)
    for tool in registry.values():
        Permission.objects.get_or_create(
            content_type=content_type,
            codename=f"use_{tool.name}",
            defaults={"name": f"Can have agents call {tool.name}"},
        )


class AgentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "agents"

    def ready(self) -> None:
        from celery import signals

        from agents.demo import tools  # noqa: F401  (registers the demo tools)
        from agents.mcp import pool
        from agents.mcp import tools as mcp_tools

        mcp_tools.install()
        post_migrate.connect(create_tool_permissions, sender=self)
        # Each worker process closes its MCP sessions (and so stops their server processes).
        signals.worker_process_shutdown.connect(pool.close_all, weak=False, dispatch_uid="mcp-pool-close")
        signals.worker_shutdown.connect(pool.close_all, weak=False, dispatch_uid="mcp-pool-close-main")
