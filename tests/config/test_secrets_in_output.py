"""Passwords in REDIS_URL never reach what manage.py serve prints."""

from __future__ import annotations

import io
import socket

import pytest
from django.core.management import CommandError

from config.management.commands.serve import Command


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_names_an_unreachable_redis_without_its_password(settings):
    url = f"redis://:hunter2-secret@127.0.0.1:{dead_port()}/0"
    settings.REDIS_URL = settings.CELERY_BROKER_URL = url
    with pytest.raises(CommandError) as error:
        Command(stdout=io.StringIO()).broker_check()
    assert "hunter2-secret" not in str(error.value)
    assert f"REDIS_URL={url.replace('hunter2-secret', '***')} does not answer" in str(error.value)
