"""The policy what-if: past proposals replayed under a proposed level or rule, against a
scenario computed by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import ToolCall
from approvals.models import BusinessRule, Verdict
from approvals.whatif import PolicyChange, whatif_replay
from tests.approvals.whatif_scenario import scenario_make

pytestmark = pytest.mark.django_db

# By hand: 4 runs, each a kb_search (it runs) then an issue_refund. The playbook emails only
# after a refund succeeded: after the 200 (edited, then run) and the 700 refunds, not after the
# rejected 120 or the blocked 6000. Every run closes its ticket: 14 proposals. At level 2
# everything but the lookups and the blocked refund waits.
BEFORE = {Verdict.EXECUTE: 4, Verdict.REQUIRE_APPROVAL: 3 + 2 + 4, Verdict.BLOCK: 1, Verdict.EXECUTE_AND_REVIEW: 0}


@pytest.fixture
def scenario(support_agent, starter, assigned_reviewer):
    return scenario_make(support_agent, starter, assigned_reviewer)


def counts(counter) -> dict[str, int]:
    return {verdict: counter[verdict] for verdict in BEFORE}


def test_raising_a_tool_shows_the_turned_down_proposals_that_would_run(support_agent, scenario):
    stored = ToolCall.objects.count()
    replay = whatif_replay(agent=support_agent, change=PolicyChange(level=4, tool="issue_refund"), days=30)
    assert replay.proposals == 14
    assert counts(replay.recorded) == BEFORE and counts(replay.before) == BEFORE
    # At level 4 the refunds of 120 and 200 run; 700 still waits (rule >500); 6000 is blocked.
    assert counts(replay.after) == {
        Verdict.EXECUTE: 6,
        Verdict.REQUIRE_APPROVAL: 7,
        Verdict.BLOCK: 1,
        Verdict.EXECUTE_AND_REVIEW: 0,
    }
    assert replay.changed == 2
    turned_down = sorted(replay.turned_down, key=lambda item: item.tool_call_id)
    assert [(item.tool_call_id, item.decision, item.reviewer) for item in turned_down] == [
        (scenario.rejected.pk, "rejected", "reviewer"),
        (scenario.edited.pk, "edited", "reviewer"),
    ]
    # The arguments as proposed (200), not as the reviewer edited them (150).
    assert turned_down[1].arguments["amount"] == 200 and turned_down[1].comment == "Only 150."
    assert (turned_down[0].before, turned_down[0].after) == (Verdict.REQUIRE_APPROVAL, Verdict.EXECUTE)
    # Nothing written: the agent keeps its level, the ledger its rows.
    support_agent.refresh_from_db()
    assert support_agent.tool_levels == {} and ToolCall.objects.count() == stored


def test_review_after_runs_them_but_reviewed_so_none_is_unreviewed(support_agent, scenario):
    replay = whatif_replay(agent=support_agent, change=PolicyChange(level=3), days=30)
    # The agent at level 3: every call that waited on its level runs and is reviewed; the >500 rule
    # still holds the 700 refund and the blocked one stays blocked.
    assert counts(replay.after) == {
        Verdict.EXECUTE: 4,
        Verdict.REQUIRE_APPROVAL: 1,
        Verdict.BLOCK: 1,
        Verdict.EXECUTE_AND_REVIEW: 8,
    }
    assert replay.turned_down == []


def test_a_rule_added_changed_or_removed(support_agent, scenario):
    block_over_150 = BusinessRule(
        tool="issue_refund", field="amount", operator=">", value=150, effect=BusinessRule.Effect.BLOCK
    )
    added = whatif_replay(agent=support_agent, change=PolicyChange(rule=block_over_150), days=30)
    # 200 and 700 now blocked too.
    assert added.after[Verdict.BLOCK] == 3 and added.after[Verdict.REQUIRE_APPROVAL] == 7

    over_500 = BusinessRule.objects.get(tool="issue_refund", value=500)
    removed = whatif_replay(
        agent=support_agent, change=PolicyChange(remove_rule_id=over_500.pk, level=4, tool="issue_refund"), days=30
    )
    # Without the >500 rule, at level 4 the 700 refund runs as well: an approved one, not listed.
    assert removed.after[Verdict.EXECUTE] == 7
    assert len(removed.turned_down) == 2

    over_500.value = 100  # changed, unsaved: the 120 and 200 refunds would wait again
    changed = whatif_replay(
        agent=support_agent, change=PolicyChange(rule=over_500, level=4, tool="issue_refund"), days=30
    )
    assert changed.after[Verdict.EXECUTE] == 4 and changed.turned_down == []
    assert BusinessRule.objects.get(pk=over_500.pk).value == 500


def test_only_the_window_counts(support_agent, scenario):
    scenario.rejected.run.tool_calls.update(created_at=timezone.now() - timedelta(days=10))
    replay = whatif_replay(agent=support_agent, change=PolicyChange(level=4, tool="issue_refund"), days=7)
    assert replay.proposals == 14 - 3
    assert [item.tool_call_id for item in replay.turned_down] == [scenario.edited.pk]
