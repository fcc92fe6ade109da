"""The reviewer inbox over a websocket: notification only, resumable from a stored ``seq``.

A client connects to ``/ws/inbox/?last_seq=N``. The consumer joins the groups of the agents
the user may review, then replays the stored events after ``N``, then forwards live ones.
It never writes: decisions are POSTs with CSRF.

A client resumes from the highest seq it received, so a socket sends seqs in increasing order
with none of the user's events missing below the last one sent. Events commit in seq order
(approvals/notify.py), but their pushes come from different processes and may overtake one
another, or be lost: each push names the events stored just before it with their agents, and
when one of them that this socket may send is above what it has accounted for (or the list
does not reach down that far), the events in between are read and sent first.
"""

from __future__ import annotations

import asyncio
import time
from importlib import import_module
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from approvals.events import agent_group, event_message, user_group
from approvals.selectors import agent_ids_reviewable_by, inbox_events_since
from audit.types import AnyUser, JSONObject
from config.consumer_base import JsonWebsocketConsumer
from config.websocket_count import websocket_closed, websocket_opened

REPLAY_BATCH = 500
UNAUTHENTICATED = 4401
FORBIDDEN = 4403
# A grant or revocation made in the console reaches open sockets at once (a message to the
# user's group); one made any other way (the admin, a group change) within this many seconds.
ACCESS_RECHECK_SECONDS = 5.0
# With no events at all, permissions and the session are read again this often.
ACCESS_TIMER_SECONDS = 30.0
# The sockets of one user in one process share a look this young (and wait for one in flight):
# an event fanned out to 500 of them costs one query, not 500. Own checks are renewed that much
# earlier, so a socket's view is never older than ACCESS_RECHECK_SECONDS.
SHARED_ACCESS_SECONDS = 1.0


def _last_seq(query_string: bytes) -> int:
    values = parse_qs(query_string.decode("latin-1")).get("last_seq", [])
    try:
        return max(int(values[0]), 0) if values else 0
    except ValueError:
        return 0


def _current_access(user_id: int | None, session_key: str | None) -> list[int] | None:
    """The agents the user may review now; None when the account was disabled or deleted, or
    the session the socket was opened with has ended (signed out, password changed)."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first() if user_id is not None else None
    if user is None:
        return None
    if session_key is not None:
        # Read only, as django.contrib.auth.get_user() checks a request's session.
        data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
        if str(data.get(SESSION_KEY)) != str(user_id) or not constant_time_compare(
            data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
        ):
            return None
    return agent_ids_reviewable_by(user=user)


AccessKey = tuple[int | None, str | None]
_shared_access: dict[AccessKey, tuple[float, list[int] | None]] = {}
_access_in_flight: dict[AccessKey, asyncio.Future[list[int] | None]] = {}


async def shared_access(user_id: int | None, session_key: str | None, *, fresh: bool = False) -> list[int] | None:
    """``_current_access`` shared by the sockets of this process: a look younger than
    SHARED_ACCESS_SECONDS is reused, one in flight is awaited. ``fresh`` (a change made in the
    console) always reads again."""
    key = (user_id, session_key)
    if not fresh:
        seen = _shared_access.get(key)
        if seen is not None and time.monotonic() - seen[0] < min(SHARED_ACCESS_SECONDS, ACCESS_RECHECK_SECONDS):
            return seen[1]
        if key in _access_in_flight:
            return await asyncio.shield(_access_in_flight[key])
    future: asyncio.Future[list[int] | None] = asyncio.get_running_loop().create_future()
    _access_in_flight[key] = future
    try:
        agent_ids: list[int] | None = await database_sync_to_async(_current_access)(user_id, session_key)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: the sockets waiting on it get it raised
        raise
    else:
        future.set_result(agent_ids)
        _shared_access[key] = (time.monotonic(), agent_ids)
        return agent_ids
    finally:
        if _access_in_flight.get(key) is future:
            del _access_in_flight[key]


def _replay_batch(agent_ids: set[int], after: int, before: int | None = None) -> list[JSONObject]:
    events = inbox_events_since(agent_ids=agent_ids, last_seq=after, before=before, limit=REPLAY_BATCH)
    return [event_message(event) for event in events]


class InboxConsumer(JsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        self.user: AnyUser = user
        last_seq = _last_seq(self.scope.get("query_string", b""))
        self.agent_ids: set[int] = set()
        self.joined: set[str] = set()
        # Every event up to this seq is with the client, sent here or before (its last_seq), or
        # not the user's to see.
        self.head = last_seq
        agent_ids = await database_sync_to_async(agent_ids_reviewable_by)(user=user)
        # Join before replaying: an event committed during the replay is either in the replay
        # or queued for this channel; the head drops the one seen twice.
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        self.joined.add(user_group(user.pk))
        await self._set_access(agent_ids)
        await self.accept()
        await websocket_opened(self.channel_name)
        # Also on a timer: a socket with no traffic still notices a sign-out or a new grant.
        self.access_timer = asyncio.create_task(self._recheck_periodically())
        # Handlers run one at a time, so live events queue in the channel layer until the
        # replay below has finished: the client sees stored events first, in seq order.
        await self._send_stored(before=None)

    async def disconnect(self, code: int) -> None:
        await websocket_closed(self.channel_name)
        timer = getattr(self, "access_timer", None)
        if timer is not None:
            timer.cancel()
        for group in getattr(self, "joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _set_access(self, agent_ids: list[int]) -> None:
        wanted = set(agent_ids)
        for agent_id in self.agent_ids - wanted:
            await self.channel_layer.group_discard(agent_group(agent_id), self.channel_name)
            self.joined.discard(agent_group(agent_id))
        for agent_id in wanted - self.agent_ids:
            await self.channel_layer.group_add(agent_group(agent_id), self.channel_name)
            self.joined.add(agent_group(agent_id))
        self.agent_ids = wanted
        self.access_checked = time.monotonic()

    async def _recheck_access(self, *, fresh: bool = False) -> bool:
        session = self.scope.get("session")
        session_key = getattr(session, "session_key", None)
        agent_ids = await shared_access(self.user.pk, session_key, fresh=fresh)
        if agent_ids is None:
            await self.close(code=FORBIDDEN)
            return False
        await self._set_access(agent_ids)
        return True

    def _access_stale(self) -> bool:
        # Early by the shared look's age, which a recheck may reuse.
        early = min(SHARED_ACCESS_SECONDS, ACCESS_RECHECK_SECONDS)
        return time.monotonic() - self.access_checked > ACCESS_RECHECK_SECONDS - early

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: object) -> None:
        # Nothing is taken from the client: decisions are POSTs with CSRF, never websocket frames.
        # Frames are not even parsed, so no JSON comes in this way (config/parsing.py is the way).
        return

    async def inbox_event(self, event: JSONObject) -> None:
        # Permissions are read again before forwarding when the last check is old: a revoked
        # reviewer must not keep receiving an agent's proposals on a socket opened before.
        if self._access_stale() and not await self._recheck_access():
            return
        if event.get("agent_id") not in self.agent_ids:
            return
        seq: int = event["seq"] if "seq" in event else event["message"]["seq"]
        if seq > self.head and self._missed_before(event):
            await self._send_stored(before=seq)  # an earlier push is late or lost
        text = event["text"] if "text" in event else await self.encode_json(event["message"])
        await self._forward(seq, text)

    def _missed_before(self, event: JSONObject) -> bool:
        """Whether an event this socket may send lies between its head and ``event``: from the
        events the push names (approvals/notify.py), or, when they do not reach down to the
        head, by reading the stored ones. Events of agents the user may not review are no gap:
        without the list each of them cost every socket of such a user a query."""
        prev_seq = event.get("prev_seq")
        if prev_seq is None or prev_seq <= self.head:
            return False
        recent = event.get("recent")
        if recent is None or event.get("listed_after", 0) > self.head:
            return True
        return any(seq > self.head and agent_id in self.agent_ids for seq, agent_id in recent)

    async def _send_stored(self, *, before: int | None) -> None:
        """Send the user's stored events after ``head`` (and before ``before``), in seq order;
        as a live event, only after a fresh enough look at the user's access, and of the agents
        that look found (the socket's own: no second reading of the permissions per socket)."""
        while True:
            if self._access_stale() and not await self._recheck_access():
                return
            if not self.agent_ids:
                return
            batch = await database_sync_to_async(_replay_batch)(set(self.agent_ids), self.head, before)
            for message in batch:
                await self._forward(message["seq"], await self.encode_json(message))
            if len(batch) < REPLAY_BATCH:
                return

    async def _recheck_periodically(self) -> None:
        while True:
            await asyncio.sleep(ACCESS_TIMER_SECONDS)
            if not await self._recheck_access():
                return

    async def inbox_access(self, event: JSONObject) -> None:
        await self._recheck_access(fresh=True)

    async def _forward(self, seq: int, text: str) -> None:
        if seq <= self.head:
            return  # sent already (replayed, then pushed live)
        await self.send(text_data=text)
        self.head = seq
