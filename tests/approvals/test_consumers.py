"""The inbox websocket: who is refused, who hears what, and replay from a stored seq.

The consumer reads the database from another thread, so these tests use ``transactional_db``;
they go through the configured channel layer (Redis: embedded or REDIS_URL).
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from guardian.shortcuts import assign_perm

from agents.models import Agent, Run, ToolCall
from agents.tools import arguments_hash
from approvals import consumers
from approvals.events import agent_group, event_message
from approvals.models import ApprovalRequest, ApprovalStatus, InboxEvent
from approvals.notify import inbox_event_publish
from config.routing import websocket_urlpatterns
from tests.conftest import make_user

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

TIMEOUT = 5


def communicator(user, last_seq: int | None = None) -> WebsocketCommunicator:
    path = "/ws/inbox/" if last_seq is None else f"/ws/inbox/?last_seq={last_seq}"
    socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    socket.scope["user"] = user
    return socket


def create_approval(agent: Agent, starter, amount: int = 10) -> tuple[int, int]:
    """A pending approval and its stored event, committed (the push goes out on commit)."""
    with transaction.atomic():
        run = Run.objects.create(agent=agent, started_by=starter, status="waiting")
        arguments = {"amount": amount, "currency": "USD"}
        call = ToolCall.objects.create(
            run=run,
            step=1,
            tool="issue_refund",
            arguments=arguments,
            arguments_hash=arguments_hash(arguments),
            status="awaiting",
        )
        approval = ApprovalRequest.objects.create(
            run=run,
            agent=agent,
            tool_call=call,
            tool="issue_refund",
            arguments=arguments,
            arguments_hash=call.arguments_hash,
            risk_class="financial",
            policy_reason="level 2",
        )
        event = inbox_event_publish(approval=approval, type="approval.created")
    return approval.pk, event.pk


def other_agent() -> Agent:
    return Agent.objects.create(slug="other", name="Other", objective="o", scope="s", tools=["issue_refund"])


def test_anonymous_is_refused(support_agent):
    async def scenario():
        socket = communicator(AnonymousUser())
        connected, code = await socket.connect(timeout=TIMEOUT)
        assert not connected
        assert code == consumers.UNAUTHENTICATED

    async_to_sync(scenario)()


def test_user_without_permission_receives_nothing(support_agent, starter, assigned_reviewer, other_reviewer):
    async def scenario():
        allowed = communicator(assigned_reviewer)
        refused = communicator(other_reviewer)
        assert (await allowed.connect(timeout=TIMEOUT))[0]
        assert (await refused.connect(timeout=TIMEOUT))[0]
        approval_id, seq = await database_sync_to_async(create_approval)(support_agent, starter)
        message = await allowed.receive_json_from(timeout=TIMEOUT)
        assert message["type"] == "approval.created" and message["seq"] == seq
        assert message["approval"]["id"] == approval_id and message["approval"]["agent"]["slug"] == "support"
        assert await refused.receive_nothing(timeout=0.5)
        await allowed.disconnect()
        await refused.disconnect()

    async_to_sync(scenario)()


def test_events_of_other_agents_are_not_sent(support_agent, starter, assigned_reviewer):
    async def scenario():
        other = await database_sync_to_async(other_agent)()
        socket = communicator(assigned_reviewer)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        await database_sync_to_async(create_approval)(other, starter)
        assert await socket.receive_nothing(timeout=0.5)
        # and a replay from 0 leaves them out as well
        replay = communicator(assigned_reviewer, last_seq=0)
        assert (await replay.connect(timeout=TIMEOUT))[0]
        assert await replay.receive_nothing(timeout=0.5)
        await socket.disconnect()
        await replay.disconnect()

    async_to_sync(scenario)()


def test_replay_since_last_seq_then_live_without_duplicates(support_agent, starter, assigned_reviewer):
    async def scenario():
        created = [await database_sync_to_async(create_approval)(support_agent, starter, n) for n in (1, 2, 3)]
        seqs = [seq for _, seq in created]
        socket = communicator(assigned_reviewer, last_seq=seqs[0])
        assert (await socket.connect(timeout=TIMEOUT))[0]
        replayed = [await socket.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
        assert [m["seq"] for m in replayed] == seqs[1:]
        assert [m["approval"]["arguments"]["amount"] for m in replayed] == [2, 3]
        assert await socket.receive_nothing(timeout=0.3)

        # the same event pushed again (replayed, then delivered live) reaches the client once
        event = await database_sync_to_async(
            lambda: event_message(InboxEvent.objects.select_related("approval__agent").get(pk=seqs[2]))
        )()
        await get_channel_layer().group_send(
            agent_group(support_agent.pk), {"type": "inbox.event", "agent_id": support_agent.pk, "message": event}
        )
        assert await socket.receive_nothing(timeout=0.5)

        _, live_seq = await database_sync_to_async(create_approval)(support_agent, starter, 4)
        live = await socket.receive_json_from(timeout=TIMEOUT)
        assert live["seq"] == live_seq and live_seq > seqs[2]
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_push_that_overtook_a_lost_one_brings_it_first(support_agent, starter, assigned_reviewer, monkeypatch):
    """Pushes come from different processes: one may be late or lost. The next push names the
    event before it, so the socket reads what it has not sent and keeps seqs in order."""
    from approvals import notify

    async def scenario():
        socket = communicator(assigned_reviewer, last_seq=0)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        push = notify._push
        monkeypatch.setattr(notify, "_push", lambda event_id: None)  # this one's push is lost
        _, lost = await database_sync_to_async(create_approval)(support_agent, starter, 1)
        monkeypatch.setattr(notify, "_push", push)
        _, pushed = await database_sync_to_async(create_approval)(support_agent, starter, 2)
        received = [await socket.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
        assert [m["seq"] for m in received] == [lost, pushed]
        assert [m["approval"]["arguments"]["amount"] for m in received] == [1, 2]

        # the lost push arriving after all changes nothing
        await database_sync_to_async(push)(lost)
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    async_to_sync(scenario)()
    chain = list(InboxEvent.objects.order_by("pk").values_list("pk", "prev_seq"))
    assert [prev for _, prev in chain] == [None, *[pk for pk, _ in chain[:-1]]]


def test_replay_runs_past_one_batch(support_agent, starter, assigned_reviewer, monkeypatch):
    monkeypatch.setattr(consumers, "REPLAY_BATCH", 2)

    async def scenario():
        seqs = [(await database_sync_to_async(create_approval)(support_agent, starter, n))[1] for n in range(5)]
        socket = communicator(assigned_reviewer, last_seq=0)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        received = [(await socket.receive_json_from(timeout=TIMEOUT))["seq"] for _ in seqs]
        assert received == seqs
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_grant_by_group_is_enough(support_agent, starter):
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="refund-team")
    member = make_user("member", "reviewers")
    member.groups.add(team)
    assign_perm("review_agent", team, support_agent)

    async def scenario():
        socket = communicator(member)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        _, seq = await database_sync_to_async(create_approval)(support_agent, starter)
        assert (await socket.receive_json_from(timeout=TIMEOUT))["seq"] == seq
        await socket.disconnect()

    async_to_sync(scenario)()


def test_frames_from_the_client_change_nothing(support_agent, starter, assigned_reviewer):
    async def scenario():
        approval_id, _ = await database_sync_to_async(create_approval)(support_agent, starter)
        socket = communicator(assigned_reviewer, last_seq=10**9)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        await socket.send_json_to({"id": approval_id, "verdict": "approve"})
        assert await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()
        return approval_id

    approval_id = async_to_sync(scenario)()
    assert ApprovalRequest.objects.get(pk=approval_id).status == ApprovalStatus.PENDING


def test_bad_last_seq_means_from_the_start(support_agent, starter, assigned_reviewer):
    async def scenario():
        _, seq = await database_sync_to_async(create_approval)(support_agent, starter)
        socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/inbox/?last_seq=abc")
        socket.scope["user"] = assigned_reviewer
        assert (await socket.connect(timeout=TIMEOUT))[0]
        assert (await socket.receive_json_from(timeout=TIMEOUT))["seq"] == seq
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_console_revocation_reaches_an_open_socket_at_once(support_agent, starter, assigned_reviewer, operator):
    from approvals.operations import reviewer_assignment_set

    async def scenario():
        socket = communicator(assigned_reviewer)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        _, seq = await database_sync_to_async(create_approval)(support_agent, starter)
        assert (await socket.receive_json_from(timeout=TIMEOUT))["seq"] == seq
        changed = await database_sync_to_async(reviewer_assignment_set)(
            agent=support_agent, reviewer=assigned_reviewer, granted=False, by=operator, reason="moved team"
        )
        assert changed
        await socket.receive_nothing(timeout=0.3)  # the access message is handled
        await database_sync_to_async(create_approval)(support_agent, starter)
        assert await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_revocation_made_elsewhere_is_read_before_forwarding(support_agent, starter, assigned_reviewer, monkeypatch):
    from guardian.shortcuts import remove_perm

    monkeypatch.setattr(consumers, "ACCESS_RECHECK_SECONDS", 0.0)

    async def scenario():
        socket = communicator(assigned_reviewer)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        await database_sync_to_async(remove_perm)("review_agent", assigned_reviewer, support_agent)
        await database_sync_to_async(create_approval)(support_agent, starter)
        assert await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_disabled_account_is_disconnected(support_agent, starter, assigned_reviewer, monkeypatch):
    monkeypatch.setattr(consumers, "ACCESS_RECHECK_SECONDS", 0.0)

    async def scenario():
        socket = communicator(assigned_reviewer)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        assigned_reviewer.is_active = False
        await database_sync_to_async(assigned_reviewer.save)(update_fields=["is_active"])
        await database_sync_to_async(create_approval)(support_agent, starter)
        closed = await socket.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": consumers.FORBIDDEN}

    async_to_sync(scenario)()


def test_signing_out_elsewhere_closes_the_socket_without_any_event(support_agent, assigned_reviewer, monkeypatch):
    from importlib import import_module

    from django.conf import settings
    from django.test import Client

    monkeypatch.setattr(consumers, "ACCESS_TIMER_SECONDS", 0.2)
    browser = Client()
    browser.force_login(assigned_reviewer)
    session_key = browser.cookies[settings.SESSION_COOKIE_NAME].value

    async def scenario():
        socket = communicator(assigned_reviewer)
        socket.scope["session"] = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        assert await socket.receive_nothing(timeout=0.5)  # still signed in: stays open
        await database_sync_to_async(browser.logout)()
        closed = await socket.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": consumers.FORBIDDEN}

    async_to_sync(scenario)()


def test_the_sockets_of_one_user_share_one_look_at_their_access(support_agent, assigned_reviewer, monkeypatch):
    """500 sockets of one reviewer rechecking for one event cost one query, not 500; a change
    made in the console (fresh) always reads again."""
    import asyncio

    reads: list[int] = []
    real = consumers._current_access

    def counted(user_id, session_key):
        reads.append(user_id)
        return real(user_id, session_key)

    monkeypatch.setattr(consumers, "_current_access", counted)
    monkeypatch.setattr(consumers, "_shared_access", {})

    async def scenario():
        looks = await asyncio.gather(*(consumers.shared_access(assigned_reviewer.pk, None) for _ in range(500)))
        assert len(reads) == 1 and all(look == [support_agent.pk] for look in looks)
        await consumers.shared_access(assigned_reviewer.pk, None)
        assert len(reads) == 1  # younger than SHARED_ACCESS_SECONDS: reused
        await consumers.shared_access(assigned_reviewer.pk, None, fresh=True)
        assert len(reads) == 2

    async_to_sync(scenario)()


def replay_reads(monkeypatch) -> list[tuple[int, int | None]]:
    """The reads of stored events the sockets make (after, before), counted as they happen."""
    reads: list[tuple[int, int | None]] = []
    read = consumers._replay_batch

    def counted(agent_ids, after, before=None):
        reads.append((after, before))
        return read(agent_ids, after, before)

    monkeypatch.setattr(consumers, "_replay_batch", counted)
    return reads


def test_events_of_agents_the_user_may_not_review_cost_no_read(support_agent, starter, assigned_reviewer, monkeypatch):
    reads = replay_reads(monkeypatch)

    async def scenario():
        other = await database_sync_to_async(other_agent)()
        socket = communicator(assigned_reviewer, last_seq=0)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        _, first = await database_sync_to_async(create_approval)(support_agent, starter, 1)
        for amount in (2, 3):
            await database_sync_to_async(create_approval)(other, starter, amount)
        _, second = await database_sync_to_async(create_approval)(support_agent, starter, 4)
        received = [await socket.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
        assert [m["seq"] for m in received] == [first, second]
        assert [m["approval"]["arguments"]["amount"] for m in received] == [1, 4]
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    async_to_sync(scenario)()
    # The replay at connect, and no other: the second's push named the two events between as
    # the other agent's.
    assert reads == [(0, None)]


def test_a_gap_longer_than_the_push_names_is_read(support_agent, starter, assigned_reviewer, monkeypatch):
    from approvals import notify

    monkeypatch.setattr(notify, "RECENT_EVENTS", 1)
    reads = replay_reads(monkeypatch)

    async def scenario():
        other = await database_sync_to_async(other_agent)()
        socket = communicator(assigned_reviewer, last_seq=0)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        _, first = await database_sync_to_async(create_approval)(support_agent, starter, 1)
        for amount in (2, 3):
            await database_sync_to_async(create_approval)(other, starter, amount)
        push = notify._push
        monkeypatch.setattr(notify, "_push", lambda event_id: None)  # this one's push is lost
        _, lost = await database_sync_to_async(create_approval)(support_agent, starter, 4)
        monkeypatch.setattr(notify, "_push", push)
        await database_sync_to_async(create_approval)(other, starter, 5)
        _, last = await database_sync_to_async(create_approval)(support_agent, starter, 6)
        received = [await socket.receive_json_from(timeout=TIMEOUT) for _ in range(3)]
        assert [m["seq"] for m in received] == [first, lost, last]
        assert [m["approval"]["arguments"]["amount"] for m in received] == [1, 4, 6]
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()
        return first, last

    first, last = async_to_sync(scenario)()
    # Named: only the event before each push, so the gaps after the first were read.
    assert reads[0] == (0, None) and (first, last) in reads
