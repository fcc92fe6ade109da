from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured


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
    """The sealer reads the chain's tail after taking its lock; only READ COMMITTED sees the latest seal."""
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
                    hint="The audit sealer reads the chain's tail after taking its lock and needs READ COMMITTED; "
                    "under a stricter level a seal can fail on the chain's unique constraints.",
                    id="audit.W002",
                )
            )
    return problems


@register()
def checkpoints_can_be_signed(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Error]:
    """The sealer signs every checkpoint: a key that cannot be read would stop it at its first seal.

    An unset key is not reported here (DEBUG generates one; otherwise the sealer refuses to start
    and says what to set), only one that is set and unusable."""
    from audit.signing import signing_key

    if not settings.AUDIT_SIGNING_KEY:
        return []
    try:
        signing_key()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="audit.E001")]
    return []
