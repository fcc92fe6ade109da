"""Staged rollout: a candidate version takes a canary share of new runs, then is promoted or rolled back.

By hand (the console), or by the guard the sweep evaluates: a candidate whose rejection rate over
CANARY_WINDOW_SECONDS exceeds CANARY_GUARD_REJECTION_FACTOR x the current version's, over at least
CANARY_GUARD_MIN_DECISIONS of its decisions, is rolled back once, audited with the evidence, and
the agent's signed webhook says so.

Fires once: every move locks the agent row and checks that the candidate it judged is still the
candidate; a second evaluator (a redelivered sweep) finds none and does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from agents.models import Agent, AgentVersion
from agents.version_stats import VersionRates, version_rates
from agents.versions import VersionConflict, VersionInvalid, behaviour_check, behaviour_diff, version_make_current
from approvals.notify import agent_webhook_enqueue
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser, JSONObject

GUARD_ACTOR = "canary guard"


@dataclass(frozen=True)
class Comparison:
    """The current version's and the candidate's rates over the same window, and the guard's finding."""

    since: datetime
    current: VersionRates | None
    candidate: VersionRates | None
    breach: str


def _locked(agent: Agent) -> Agent:
    return (
        # Only the agent's row: PostgreSQL locks no nullable side of an outer join.
        Agent.objects.select_for_update(no_key=True, of=("self",))
        .select_related("current_version", "candidate_version")
        .get(pk=agent.pk)
    )


def canary_start(*, agent: Agent, version: AgentVersion, share: int, user: AnyUser | None, reason: str) -> Agent:
    """Make ``version`` the candidate for ``share`` % of new runs (again: a new share)."""
    if not isinstance(share, int) or isinstance(share, bool) or not 0 <= share <= 100:
        raise VersionInvalid("A canary share is a whole number from 0 to 100.")
    with audited_atomic():
        agent = _locked(agent)
        if version.agent_id != agent.pk:
            raise VersionInvalid(f"Version {version.pk} is not a version of {agent.slug}.")
        if agent.current_version_id == version.pk:
            raise VersionConflict(f"Version {version.number} is current already; choose another as the candidate.")
        behaviour_check(agent=agent, behaviour=version.behaviour)
        old = agent.candidate_version
        agent.candidate_version, agent.canary_share = version, share
        agent.save(update_fields=["candidate_version", "canary_share", "updated_at"])
        audit_record(
            actor=user,
            action="agents.version.canary_started",
            target=agent,
            data={
                "version": version.number,
                "replaces": old.number if old and old.pk != version.pk else None,
                "share": share,
                "current": agent.current_version.number if agent.current_version else None,
                "reason": reason,
            },
        )
    return agent


def canary_promote(*, agent: Agent, user: AnyUser | None, reason: str) -> Agent:
    """The candidate becomes current for every new run; audited with the comparison that stood."""
    with audited_atomic():
        agent = _locked(agent)
        candidate, old = agent.candidate_version, agent.current_version
        if candidate is None:
            raise VersionConflict(f"{agent.slug} has no candidate version to promote.")
        evidence = _evidence(canary_compare(agent=agent))
        version_make_current(agent, candidate)
        audit_record(
            actor=user,
            action="agents.version.promoted",
            target=agent,
            data={
                "from": old.number if old else None,
                "to": candidate.number,
                "diff": behaviour_diff(old.behaviour if old else None, candidate.behaviour),
                "reason": reason,
                "evidence": evidence,
            },
        )
    return agent


def canary_rollback(
    *,
    agent: Agent,
    user: AnyUser | str | None,
    reason: str,
    candidate: AgentVersion | None = None,
    evidence: JSONObject | None = None,
) -> bool:
    """New runs go back to the current version only. With ``candidate`` (the guard), only if it is
    still the candidate: returns whether this call rolled it back."""
    automatic = candidate is not None
    with audited_atomic():
        agent = _locked(agent)
        rolled = agent.candidate_version
        if rolled is None or (candidate is not None and rolled.pk != candidate.pk):
            if automatic:
                return False  # another evaluator, or a person, moved it first
            raise VersionConflict(f"{agent.slug} has no candidate version to roll back.")
        if evidence is None:
            evidence = _evidence(canary_compare(agent=agent))
        share = agent.canary_share
        agent.candidate_version, agent.canary_share = None, 0
        agent.save(update_fields=["candidate_version", "canary_share", "updated_at"])
        data: JSONObject = {
            "version": rolled.number,
            "current": agent.current_version.number if agent.current_version else None,
            "share": share,
            "automatic": automatic,
            "reason": reason,
            "evidence": evidence,
        }
        audit_record(actor=user, action="agents.version.canary_rolled_back", target=agent, data=data)
        if automatic:
            text = f"[{agent.slug}] candidate version {rolled.number} was rolled back automatically: {reason}"
            agent_webhook_enqueue(
                agent=agent, event="version.rolled_back", payload={"text": text, "agent": agent.slug, **data}
            )
    return True


def canary_compare(*, agent: Agent, now: datetime | None = None) -> Comparison:
    """The current version's and the candidate's rates since CANARY_WINDOW_SECONDS ago."""
    since = (now or timezone.now()) - timedelta(seconds=settings.CANARY_WINDOW_SECONDS)
    current_id, candidate_id = agent.current_version_id, agent.candidate_version_id
    ids = [pk for pk in (current_id, candidate_id) if pk is not None]
    rates = version_rates(version_ids=ids, since=since)
    current = rates.get(current_id) if current_id else None
    candidate = rates.get(candidate_id) if candidate_id else None
    return Comparison(since=since, current=current, candidate=candidate, breach=_breach(current, candidate))


def _breach(current: VersionRates | None, candidate: VersionRates | None) -> str:
    """Why the guard rolls the candidate back, or "" when it does not."""
    if candidate is None or candidate.decisions < settings.CANARY_GUARD_MIN_DECISIONS:
        return ""
    factor = float(settings.CANARY_GUARD_REJECTION_FACTOR)
    baseline = (current.rejection_rate if current else None) or 0.0
    rate = candidate.rejection_rate or 0.0
    if rate <= factor * baseline:
        return ""
    return (
        f"rejection rate {rate:.0%} of {candidate.decisions} decisions is above {factor:g} x "
        f"the current version's {baseline:.0%}"
    )


def _evidence(comparison: Comparison) -> JSONObject:
    return {
        "since": comparison.since.isoformat(),
        "window_seconds": settings.CANARY_WINDOW_SECONDS,
        "min_decisions": settings.CANARY_GUARD_MIN_DECISIONS,
        "factor": str(settings.CANARY_GUARD_REJECTION_FACTOR),
        "current": comparison.current.as_dict() if comparison.current else None,
        "candidate": comparison.candidate.as_dict() if comparison.candidate else None,
        "breach": comparison.breach,
    }


def canary_guards_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """The guard over every agent with a candidate (the sweep calls it). Returns how many rolled back."""
    rolled = 0
    for agent in Agent.objects.filter(candidate_version__isnull=False).select_related("candidate_version"):
        comparison = canary_compare(agent=agent, now=now)
        if not comparison.breach:
            continue
        assert agent.candidate_version is not None
        if canary_rollback(
            agent=agent,
            user=GUARD_ACTOR,
            reason=comparison.breach,
            candidate=agent.candidate_version,
            evidence=_evidence(comparison),
        ):
            rolled += 1
    return {"canary_rollbacks": rolled}
