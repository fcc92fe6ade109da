from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Warning, register


@register()
def sqlite_transactions_take_the_write_lock(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Warning]:
    """The audit chain relies on SQLite writers being serialized for their whole transaction."""
    problems: list[Warning] = []
    for alias, config in settings.DATABASES.items():
        if "sqlite3" not in config.get("ENGINE", ""):
            continue
        mode = str(config.get("OPTIONS", {}).get("transaction_mode") or "").upper()
        if mode not in {"IMMEDIATE", "EXCLUSIVE"}:
            problems.append(
                Warning(
                    f"DATABASES[{alias!r}] is SQLite without IMMEDIATE transactions.",
                    hint="Set OPTIONS['transaction_mode'] = 'IMMEDIATE': concurrent audit appends "
                    "would otherwise fail on the chain's unique constraint.",
                    id="audit.W001",
                )
            )
    return problems


@register()
def postgres_reads_committed_rows(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Warning]:
    """The chain head is read under the chain lock; only READ COMMITTED sees the latest commit."""
    problems: list[Warning] = []
    for alias, config in settings.DATABASES.items():
        if "postgresql" not in config.get("ENGINE", ""):
            continue
        level = config.get("OPTIONS", {}).get("isolation_level")
        if level is None:
            continue
        from psycopg import IsolationLevel

        if IsolationLevel(level) != IsolationLevel.READ_COMMITTED:
            problems.append(
                Warning(
                    f"DATABASES[{alias!r}] uses the {IsolationLevel(level).name} isolation level.",
                    hint="Audit appends read the chain head after taking the chain lock and need READ COMMITTED; "
                    "under a stricter level concurrent appends fail on the chain's unique constraint.",
                    id="audit.W002",
                )
            )
    return problems
