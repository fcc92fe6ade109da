"""Feedback on a finished run: thumbs up or down and an optional correction.

One writer: the trace page and the API both call ``run_feedback_give``. Who may give it is the
run's starter or a reviewer of its agent; anyone else who may read the run is refused (403),
and the callers answer 404 to those who may not even read it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from agents.models import Run, RunFeedback
from approvals.selectors import user_may_review
from audit.services import audit_record, audited_atomic
from audit.types import AnyUser
from config.errors import Conflict, DomainError, Forbidden


class RunNotFinished(Conflict):
    code = "run_not_finished"


class FeedbackInvalid(DomainError):
    code = "invalid_feedback"


class FeedbackNotAllowed(Forbidden):
    code = "feedback_not_allowed"


def may_give_feedback(*, user: AnyUser, run: Run) -> bool:
    """The run's starter, or a user who may review its agent."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return run.started_by_id == user.pk or user_may_review(user=user, agent=run.agent)


def _checked(rating: object, correction: object) -> tuple[str, str]:
    errors: dict[str, list[str]] = {}
    if rating not in RunFeedback.Rating.values:
        errors["rating"] = [f"Must be one of: {', '.join(RunFeedback.Rating.values)}."]
    if not isinstance(correction, str):
        errors["correction"] = ["Must be a string."]
    elif len(correction.strip()) > RunFeedback.CORRECTION_MAX_LENGTH:
        errors["correction"] = [f"At most {RunFeedback.CORRECTION_MAX_LENGTH} characters."]
    elif "\x00" in correction:
        errors["correction"] = ["May not contain NUL characters."]
    if errors:
        raise FeedbackInvalid("The feedback is invalid.", details={"errors": errors})
    return str(rating), str(correction).strip()


def _as_data(feedback: RunFeedback | None) -> dict[str, Any] | None:
    if feedback is None:
        return None
    return {"rating": feedback.rating, "correction": feedback.correction}


def run_feedback_give(*, run: Run, user: AnyUser, rating: object, correction: object = "") -> RunFeedback:
    """Give or change ``user``'s feedback on ``run``. Audited; the same feedback again changes
    nothing and writes no event."""
    if not isinstance(user, User) or not may_give_feedback(user=user, run=run):
        raise FeedbackNotAllowed("Only the run's starter or a reviewer of its agent may give feedback on it.")
    rating, correction = _checked(rating, correction)
    with audited_atomic():
        # Read inside the transaction: a run ends only once, so a terminal status seen here stays.
        status = Run.objects.filter(pk=run.pk).values_list("status", flat=True).get()
        run.status = status
        if not run.is_terminal:
            raise RunNotFinished(
                f"Run {run.pk} is {status}: feedback is given once it has finished.", details={"status": status}
            )
        # The chain lock taken by audited_atomic serializes audited writers, so two first
        # feedbacks of one user cannot both find no row (and the unique constraint would refuse
        # the second); the row lock holds an existing one against a concurrent change.
        feedback = RunFeedback.objects.select_for_update().filter(run=run, user=user).first()
        if feedback is not None and (feedback.rating, feedback.correction) == (rating, correction):
            return feedback
        old = _as_data(feedback)
        if feedback is None:
            feedback = RunFeedback.objects.create(run=run, user=user, rating=rating, correction=correction)
        else:
            feedback.rating = rating
            feedback.correction = correction
            feedback.save(update_fields=["rating", "correction", "updated_at"])
        feedback.run = run
        audit_record(
            actor=user,
            action="agents.run.feedback_changed" if old else "agents.run.feedback_given",
            target=feedback,
            # audit_record masks PII and secrets in free text, the correction's too.
            data={"rating": rating, "correction": correction, "old": old},
        )
    return feedback
