"""A worker's lease on a run: one conditional UPDATE admits one worker, renewed while it works."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from agents.models import Agent, Run, RunStatus
from agents.runtime.lifecycle import enqueue_advance
from agents.runtime.status import decided_calls, run_move
from audit.services import audited_atomic

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker holds the run now: this one stops without writing anything."""


@dataclass
class Lease:
    run_id: int
    token: str

    def renew(self) -> bool:
        until = timezone.now() + timedelta(seconds=settings.RUN_LEASE_SECONDS)
        return Run.objects.filter(pk=self.run_id, lease_owner=self.token).update(lease_expires_at=until) == 1


class LeaseKeeper:
    """Renews the lease in the background while a worker thinks or runs a tool, so a long
    model call or tool does not let the sweeper hand a live run to a second worker."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{lease.run_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        interval = max(settings.RUN_LEASE_SECONDS / 3, 0.05)
        try:
            while not self._stop.wait(interval):
                try:
                    renewed = self.lease.renew()
                except Exception:  # noqa: BLE001 - a dropped connection: reconnect and go on
                    logger.warning("run %s: lease renewal failed; retrying", self.lease.run_id, exc_info=True)
                    connection.close()
                    continue
                if not renewed:
                    self.lost = True
                    return
        finally:
            connection.close()  # this thread's own connection


def lease_take(run_id: int) -> Lease | None:
    """Claim the run with one conditional UPDATE; None when another worker holds it or it is not runnable."""
    token = uuid.uuid4().hex
    now = timezone.now()
    runnable = Q(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]) | Q(decided_calls(), status=RunStatus.WAITING)
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    claimed = run_move(
        run_id=run_id,
        to=RunStatus.RUNNING,
        where=runnable & free,
        lease_owner=token,
        lease_expires_at=now + timedelta(seconds=settings.RUN_LEASE_SECONDS),
    )
    return Lease(run_id, token) if claimed else None


def hold(run: Run, lease: Lease | None) -> Run:
    """Inside an audited transaction: lock the run and check this worker still holds its lease.

    Every write of the loop starts here, so a worker whose lease ran out (and whose run
    another worker took over) rolls back instead of proposing or finishing a second time.
    """
    locked = run_locked(run.pk)
    if Run.agent.is_cached(run):
        locked.agent = run.agent  # the audit events of the step name it: no query for each
    if lease is not None and (locked.lease_owner != lease.token or locked.status != RunStatus.RUNNING):
        raise LeaseLost(f"run {run.pk} is no longer held by this worker")
    return locked


def run_locked(run_id: int) -> Run:
    """Inside a transaction: the run's row, locked until it ends (as ``select_for_update(no_key=True)``).

    Written out, not built by the ORM: every step takes this lock, and building the query cost
    more than the database took to answer it."""
    if not connection.in_atomic_block:
        raise TransactionManagementError("run_locked() locks the run inside a transaction.")
    features = connection.features
    lock = ""
    if features.has_select_for_update:
        lock = " FOR NO KEY UPDATE" if features.has_select_for_no_key_update else " FOR UPDATE"
        lock += " OF r" if features.has_select_for_update_of else ""
    quote = connection.ops.quote_name
    runs, agents = quote(Run._meta.db_table), quote(Agent._meta.db_table)
    # With its agent's kill switch (``agent_enabled``), read in the same statement (the agent's
    # row is not locked): what a claim made under this lock checks of the step boundary.
    rows = list(
        Run.objects.raw(
            f"SELECT r.*, a.enabled AS agent_enabled FROM {runs} r INNER JOIN {agents} a ON a.id = r.agent_id "  # noqa: S608 - the models' own tables
            f"WHERE r.id = %s{lock}",
            [run_id],
        )
    )
    if not rows:
        raise Run.DoesNotExist(f"run {run_id} does not exist")
    return rows[0]


def requeue(run: Run, lease: Lease) -> None:
    """Give the run back to the queue: the task ends well before its time limit, another picks up."""
    with audited_atomic():
        released = run_move(
            run_id=run.pk,
            to=RunStatus.QUEUED,
            where=Q(lease_owner=lease.token),
            lease_owner="",
            lease_expires_at=None,
            enqueued_at=timezone.now(),
        )
        if released:
            enqueue_advance(run.pk)
