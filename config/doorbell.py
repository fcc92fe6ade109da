"""Ring a task by name once the current transaction commits.

The database is the truth and the broker only a doorbell: a task is named by string (so the
code that rings never imports the code that answers), it carries ids only, and a publish that
fails after commit is logged, not raised: the rows already say what must happen and the
sweeper rings again. A caller whose rows cannot tell "rung" from "not rung" passes
``on_failure``, which leaves that mark in the database for the sweeper's next period.

A publish gives up quickly (broker socket timeouts and one retry, config/settings.py), so a
request never waits long on a broker that is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from config.celery import app

logger = logging.getLogger(__name__)

ADVANCE_RUN = "agents.tasks.advance_run"
# Routed to the "resumes" queue that workers drain first: a person is waiting on the answer.
RESUME_RUN = "agents.tasks.resume_run"
DELIVER_WEBHOOK = "approvals.tasks.deliver_webhook"

OnFailure = Callable[[], object]


def ring(task_name: str, *args: int, on_failure: OnFailure | None = None) -> None:
    # After commit, so the worker never looks for a row it cannot see yet.
    transaction.on_commit(lambda: send(task_name, *args, on_failure=on_failure))


def send(task_name: str, *args: int, on_failure: OnFailure | None = None) -> bool:
    """Publish now. Returns whether the broker took it; never raises."""
    try:
        app.send_task(task_name, args=list(args))
    except Exception:  # noqa: BLE001 - a broker outage must not undo or fail what was committed
        logger.warning("could not enqueue %s%s; the sweeper rings again", task_name, args, exc_info=True)
        if on_failure is not None:
            try:
                on_failure()
            except Exception:  # noqa: BLE001 - the sweeper's slower pass still finds it
                logger.exception("could not mark %s%s as not rung", task_name, args)
        return False
    return True
