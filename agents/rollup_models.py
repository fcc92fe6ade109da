"""The hourly roll-up tables of the steps (read by ``agents.rollup_reads``, written by ``agents.rollups``).

A step is written once and its measured fields (agent, kind, model, latency, tokens, cost, time)
never change, so the steps of an hour that has closed can be counted once: ``StepHour`` holds,
per UTC hour, agent, kind, model and latency bucket, the number of steps and their sums. The
roll-up task (``agents.rollups``, the only writer) appends whole hours and moves the watermark
``RollupMark.through`` in the same transaction; rows before the watermark are never rewritten.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import models

# The upper bounds of a step's latency in milliseconds: config.metrics' STEP_BUCKETS (seconds).
STEP_BOUNDS_MS: tuple[int, ...] = (5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
STEPS = "steps"
# Before any roll-up: every step is in the tail.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


class RollupMark(models.Model):
    """How far a roll-up has counted: every row created before ``through`` is in its table."""

    name = models.CharField(max_length=32, primary_key=True)
    through = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} rolled up through {self.through:%Y-%m-%d %H:%M}"


class StepHour(models.Model):
    """The steps created in one UTC hour, by agent, kind, model and latency bucket.

    ``bucket`` is the index of the first of ``STEP_BOUNDS_MS`` the latency is at or under, and
    ``len(STEP_BOUNDS_MS)`` past the last one.
    """

    hour = models.DateTimeField()
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=12)
    model = models.CharField(max_length=100, blank=True)
    bucket = models.PositiveSmallIntegerField()
    steps = models.PositiveIntegerField()
    latency_ms = models.PositiveBigIntegerField()
    prompt_tokens = models.PositiveBigIntegerField()
    completion_tokens = models.PositiveBigIntegerField()
    cost = models.DecimalField(max_digits=18, decimal_places=6)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "agent", "kind", "model", "bucket"], name="stephour_unique_group")
        ]

    def __str__(self) -> str:
        return f"steps of agent {self.agent_id} at {self.hour:%Y-%m-%d %H}:00"
