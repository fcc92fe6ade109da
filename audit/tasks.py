"""The sealer as a Celery task, on its own queue: the safety net behind ``audit_seal --loop``."""

from __future__ import annotations

from celery import shared_task

from audit.sealer import seal_pending


@shared_task(name="audit.tasks.seal", ignore_result=True)  # type: ignore[untyped-decorator]  # celery ships no types
def seal() -> int:
    # A short wait: beat sends the next one in a second, and a queued copy expires by then.
    return seal_pending(wait=0.5)
