from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.mcp.models import McpServer
from agents.mcp.services import mcp_tools_list


class Command(BaseCommand):
    help = (
        "Connect to MCP servers, list their tools and store their schemas. New or changed tools have no "
        "risk class until an operator sets one (they count as write_irreversible). Audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("servers", nargs="*", help="Server slugs; all enabled servers when none are given.")

    def handle(self, *args: Any, servers: list[str], **options: Any) -> None:
        rows = McpServer.objects.filter(slug__in=servers) if servers else McpServer.objects.filter(enabled=True)
        found = {server.slug: server for server in rows}
        missing = sorted(set(servers) - set(found))
        if missing:
            raise CommandError(f"No such MCP server: {', '.join(missing)}")
        for server in found.values():
            try:
                listing = mcp_tools_list(server=server, actor="mcp_sync")
            except Exception as exc:  # noqa: BLE001 - reported per server; the command fails at the end
                raise CommandError(f"{server.slug}: {type(exc).__name__}: {exc}") from exc
            self.stdout.write(
                f"{server.slug}: added {listing.added or '-'}, changed {listing.changed or '-'}, "
                f"gone {listing.removed or '-'}, unchanged {len(listing.unchanged)}"
            )
