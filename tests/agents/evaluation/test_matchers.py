"""Expected calls and outcomes against proposals: equal, range, regex, order and extras."""

from __future__ import annotations

from agents.evaluation.matchers import (
    calls_score,
    expected_calls_errors,
    expected_outcome_errors,
    matcher_errors,
    matcher_from,
    mismatch,
    outcome_mismatch,
)


def test_equal_is_json_equality():
    assert mismatch({"equal": 1}, 1.0) == ""
    assert mismatch({"equal": 1}, True) == "true is not 1"
    assert mismatch({"equal": {"a": [1, 2]}}, {"a": [1, 2]}) == ""
    assert mismatch({"equal": "USD"}, "EUR") == '"EUR" is not "USD"'


def test_range_is_inclusive_and_open_ended():
    assert mismatch({"range": [0, 500]}, 500) == ""
    assert mismatch({"range": [0, 500]}, 500.5) == "500.5 is not in [0, 500]"
    assert mismatch({"range": [None, 10]}, -3) == ""
    assert mismatch({"range": [1, None]}, "7") == '"7" is not in [1, …]'
    assert mismatch({"range": [0, 1]}, False) != ""


def test_regex_searches_strings_only():
    assert mismatch({"regex": "^solv"}, "solved") == ""
    assert mismatch({"regex": "^solv"}, "unsolved") == '"unsolved" does not match /^solv/'
    assert mismatch({"regex": "1"}, 1) != ""


def test_bad_matchers_are_refused_with_a_reason():
    assert matcher_errors({"range": [5, 1]}) == ["range [5, 1] is empty"]
    assert "does not compile" in matcher_errors({"regex": "("})[0]
    assert matcher_errors({"like": "x"})[0].startswith("a matcher is one of")
    assert matcher_errors({"regex": "a" * 501}) == ["regex takes a pattern of at most 500 characters"]
    assert expected_calls_errors([{"tool": "x", "arguments": {"a": {"range": "1-2"}}}]) == [
        "call 1, a: range takes [low, high]: two numbers, either may be null"
    ]
    assert expected_calls_errors([{"arguments": {}}]) == ["call 1: give its tool"]
    assert expected_outcome_errors("won") == ["the outcome is one of succeeded, failed, waiting"]
    assert matcher_from(5) == {"equal": 5} and matcher_from({"regex": "a"}) == {"regex": "a"}


def proposal(tool: str, verdict: str = "require_approval", read_only: bool = False, **arguments):
    return {"tool": tool, "arguments": arguments, "verdict": verdict, "read_only": read_only}


def test_calls_match_in_order_and_extra_side_effects_count():
    proposals = [
        proposal("kb_search", "execute", read_only=True, query="refunds"),
        proposal("issue_refund", amount=120),
        proposal("update_ticket", status="solved"),
        proposal("send_email", to="a@example.com"),
    ]
    expected = [
        {"tool": "issue_refund", "arguments": {"amount": {"range": [0, 500]}}, "verdict": "require_approval"},
        {"tool": "update_ticket", "arguments": {"status": {"equal": "solved"}}},
    ]
    score = calls_score(expected, proposals)
    # The lookup was not expected but costs nothing; the email was not expected.
    assert (score.matched, score.expected, score.unexpected) == (2, 2, 1)
    assert score.reasons == ("unexpected send_email (require_approval)",)

    # Order matters: an expected call before one already matched is not found after it.
    reordered = calls_score(list(reversed(expected)), proposals)
    assert reordered.matched == 1
    assert "expected issue_refund: not proposed" in reordered.reasons


def test_a_wrong_argument_or_verdict_says_which():
    proposals = [proposal("issue_refund", "block", amount=800)]
    score = calls_score([{"tool": "issue_refund", "arguments": {"amount": {"range": [0, 500]}}}], proposals)
    assert score.reasons == ("expected issue_refund: amount 800 is not in [0, 500]", "unexpected issue_refund (block)")
    score = calls_score([{"tool": "issue_refund", "verdict": "execute"}], proposals)
    assert score.reasons[0] == "expected issue_refund: verdict block is not execute"


def test_outcomes():
    assert outcome_mismatch(None, outcome="failed", answer=None) == ""
    assert outcome_mismatch("succeeded", outcome="failed", answer=None) == "outcome failed is not succeeded"
    expected = {"status": "succeeded", "answer": {"refund": {"regex": "^not_executed$"}}}
    assert outcome_mismatch(expected, outcome="succeeded", answer={"refund": "not_executed"}) == ""
    assert outcome_mismatch(expected, outcome="succeeded", answer={"refund": "done"}) == (
        'answer: refund "done" does not match /^not_executed$/'
    )
