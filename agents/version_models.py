"""An agent's behaviour at one point: immutable once written (agents.versions writes them)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class VersionImmutable(Exception):
    """A version is never changed or deleted: a change of behaviour is a new version."""


class AgentVersionQuerySet(models.QuerySet["AgentVersion"]):
    def update(self, **kwargs: Any) -> int:
        raise VersionImmutable("Agent versions are immutable; create a new one (agents.versions.version_create).")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise VersionImmutable("Agent versions are immutable and kept: runs name the version they ran.")


class AgentVersion(models.Model):
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    # The behaviour fields (agents.versions.BEHAVIOUR_FIELDS) as plain JSON.
    behaviour = models.JSONField()
    # {"field": {"old": ..., "new": ...}} from ``based_on`` (the version current when this one was made).
    diff = models.JSONField(default=dict, blank=True)
    # DO_NOTHING: the versions it names go with it when their agent is deleted (constraints checked at commit).
    based_on = models.ForeignKey("self", null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who made it, as a name: the user's, or the system's ("agent definitions", "canary guard").
    author_name = models.CharField(max_length=150)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AgentVersionQuerySet.as_manager()

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [models.UniqueConstraint(fields=["agent", "number"], name="agentversion_unique_number")]

    def __str__(self) -> str:
        return f"{self.agent_id} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise VersionImmutable(f"Version {self.number} is immutable; create a new one.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise VersionImmutable("Agent versions are immutable and kept: runs name the version they ran.")
