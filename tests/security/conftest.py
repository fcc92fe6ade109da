from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.live import AsgiServer

# Hypothesis, which Schemathesis drives, keeps its caches with the suite's other files under
# VAR_DIR, not in the checkout.
set_hypothesis_home_dir(Path(settings.VAR_DIR) / "hypothesis")


@pytest.fixture
def fresh_asgi_server(request: pytest.FixtureRequest, _live_asgi: AsgiServer) -> AsgiServer:
    """The live ASGI server, in a process that has seen no earlier test's database.

    The server process outlives the flush of the test database between tests, which recreates
    the content types and permissions under new ids; the process still holds the old ones
    (Django's ContentType cache, guardian's per-permission cache), so its object-permission
    checks would see no grant at all, or fail on two ids for one model. A process started for this
    test reads the current rows: one that ran before is restarted.
    """
    ran_before = _live_asgi.running
    server: AsgiServer = request.getfixturevalue("asgi_server")
    if ran_before:
        server.restart()
    return server
