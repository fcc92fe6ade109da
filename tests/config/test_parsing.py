"""config.parsing, the one way in for JSON: its limits at their edges, and its quick checks
agreeing with the full walk (the endpoints that use it: tests/security/test_inputs.py)."""

from __future__ import annotations

import json

import pytest

from config.errors import (
    JSONDuplicateKey,
    JSONInvalidText,
    JSONNumberOutOfRange,
    JSONRefused,
    JSONSyntaxError,
    JSONTooDeep,
)
from config.parsing import INT64_MAX, INT64_MIN, json_loads_checked, json_value_errors


def refusal(text, error=JSONRefused, **kwargs):
    with pytest.raises(error) as caught:
        json_loads_checked(text, **kwargs)
    return caught.value


def test_depth_is_limited_at_64_levels(settings):
    assert settings.JSON_MAX_DEPTH == 64
    assert json_loads_checked("[" * 64 + "]" * 64) is not None
    assert json_loads_checked('{"a": ' * 63 + "[]" + "}" * 63) is not None
    error = refusal("[" * 65 + "]" * 65, JSONTooDeep)
    assert error.code == "too_deep" and list(error.details["errors"]) == [".".join(["0"] * 64)]
    assert refusal("[" * 1_000_000 + "]" * 1_000_000, JSONTooDeep).details["errors"] == {
        "non_field_errors": ["is nested deeper than 64 levels"]
    }


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"note": "[" * 500, "quoted": 'a \\" [[[[', "list": [["x"]]})
    assert json_loads_checked(text)["note"] == "[" * 500
    deep_with_escapes = json.dumps({"q": '"'})[:-1] + ', "d": ' + "[" * 65 + "]" * 65 + "}"
    refusal(deep_with_escapes, JSONTooDeep)  # an escaped quote: the walk counts instead


@pytest.mark.parametrize(
    "text",
    ['"\\u0000"', '"\\ud800"', '"\\uDFFF x"', '{"\\u0000": 1}', '{"a\\udbff": 1}', '["ok", "\\ud83d"]'],
)
def test_nul_and_lone_surrogates_are_refused(text):
    assert refusal(text, JSONInvalidText).code == "invalid_text"


def test_text_that_only_looks_suspect_is_taken():
    assert json_loads_checked('"\\\\u0000"') == "\\u0000"  # an escaped backslash, then "u0000"
    assert json_loads_checked('"\\ud83d\\ude00"') == "\U0001f600"  # a valid pair
    assert json_loads_checked('"caf\\u00e9"') == "café"


def test_a_str_from_python_with_a_raw_lone_surrogate_is_refused():
    refusal('{"a": "\ud800"}', JSONInvalidText)
    refusal(b'"\xed\xa0\x80"', JSONInvalidText)  # the same in UTF-8 bytes: not UTF-8 at all


@pytest.mark.parametrize("number", [INT64_MIN, INT64_MAX, 0, -1, 10**18])
def test_integers_within_64_bits_are_taken(number):
    assert json_loads_checked(f"[{number}]") == [number]


@pytest.mark.parametrize("text", [str(INT64_MAX + 1), str(INT64_MIN - 1), "1" * 10_000, "1e309", "-1e400"])
def test_numbers_out_of_range_are_refused(text):
    assert refusal(f'{{"n": [{text}]}}', JSONNumberOutOfRange, root="input").details["errors"].keys() == {"input.n.0"}


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "{", "[1,]", "\ufeff[]", ""])
def test_what_is_not_json_is_a_syntax_error(text):
    assert refusal(text, JSONSyntaxError).code == "parse_error"


def test_a_key_twice_is_refused_where_it_is():
    error = refusal('{"a": {"b": 1, "b": 2, "c": 3, "c": 4}}', JSONDuplicateKey)
    assert error.details["errors"] == {"a.b": ["appears twice"], "a.c": ["appears twice"]}


def test_problems_are_listed_with_paths_and_bounded():
    error = refusal(json.dumps([{"k": "\x00"}] * 100))
    assert len(error.details["errors"]) == 20
    keys = refusal('{"\\u0000key": 1}').details["errors"]
    assert keys == {"\\u0000key": ["the key contains a NUL character (\\u0000), which cannot be stored"]}


def test_values_from_python_are_checked_the_same_way():
    assert json_value_errors({"a": [1, "x", None, True, 1.5]}) == {}
    errors = json_value_errors({"a": [2**70, float("inf"), "\x00", ("\ud800",)]}, root="input")
    assert set(errors) == {"input.a.0", "input.a.1", "input.a.2", "input.a.3.0"}
    deep: list = []
    node = deep
    for _ in range(10_000):
        node.append([])
        node = node[0]
    assert json_value_errors({"deep": deep}) != {}  # no RecursionError: the walk has its own stack
