"""Ring a task by name once the current transaction commits.

The database is the truth and the broker only a doorbell: a task is named by string (so the
code that rings never imports the code that answers), it carries ids only, and a publish that
fails after commit is logged, not raised: the rows already say what must happen and the
sweeper rings again.
"""

from __future__ import annotations

import logging

from django.db import transaction

from config.celery import app

logger = logging.getLogger(__name__)

ADVANCE_RUN = "agents.tasks.advance_run"
# Routed to the "resumes" queue that workers drain first: a person is waiting on the answer.
RESUME_RUN = "agents.tasks.resume_run"
DELIVER_WEBHOOK = "approvals.tasks.deliver_webhook"


def ring(task_name: str, *args: int) -> None:
    # After commit, so the worker never looks for a row it cannot see yet.
    transaction.on_commit(lambda: send(task_name, *args))


def send(task_name: str, *args: int) -> None:
    try:
        app.send_task(task_name, args=list(args))
    except Exception:  # noqa: BLE001 - a broker outage must not undo or fail what was committed
        logger.warning("could not enqueue %s%s; the sweeper rings again", task_name, args, exc_info=True)
