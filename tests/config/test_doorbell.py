from __future__ import annotations

import logging

import pytest
from kombu.exceptions import OperationalError

from config import doorbell
from config.celery import app


def test_every_task_rung_by_name_is_a_registered_task():
    import agents.tasks  # noqa: F401
    import approvals.tasks  # noqa: F401  (the modules the worker autodiscovers)

    for name in (doorbell.ADVANCE_RUN, doorbell.RESUME_RUN, doorbell.DELIVER_WEBHOOK):
        assert name in app.tasks, name


def test_resumes_are_routed_to_their_own_queue(settings):
    assert settings.CELERY_TASK_ROUTES[doorbell.RESUME_RUN] == {"queue": "resumes"}
    assert settings.CELERY_TASK_ROUTES[doorbell.ADVANCE_RUN] == {"queue": "runs"}


@pytest.mark.django_db
def test_a_publish_that_fails_after_commit_is_logged_not_raised(
    monkeypatch, caplog, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", broker_down)
    with (
        caplog.at_level(logging.WARNING, logger="config.doorbell"),
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        doorbell.ring(doorbell.ADVANCE_RUN, 42)
    assert len(callbacks) == 1
    assert "could not enqueue agents.tasks.advance_run(42,)" in caplog.text
