"""The one way in for JSON.

Every JSON text that comes in (API request bodies through ``config.api.JSONParser``, the inbox's
JSON edit mode, the console's rule values, a model's tool arguments) is parsed by
``json_loads_checked``; every JSON value that arrives already parsed (a run's input from a
caller, a reasoner's tool arguments) is checked by ``json_value_errors``. Both refuse what the
rest of the code cannot take:

- nesting deeper than ``settings.JSON_MAX_DEPTH`` (Python's parser itself raises RecursionError
  at about a thousand levels; walking and storing deep values recurses too);
- text with a NUL character or a lone UTF-16 surrogate (PostgreSQL's jsonb refuses ``\\u0000``,
  and a lone surrogate cannot be encoded as UTF-8 at all), in strings and in keys;
- integers beyond signed 64 bits (what the database stores and compares) and numbers beyond a
  float's range (``1e400`` would become infinity, which JSON cannot write back);
- an object naming a key twice (readers disagree on which value counts);
- NaN and Infinity, which are not JSON.

Plain Python with no web framework in it, so every layer may use it; the refusals are domain
errors (``config.errors.JSONRefused``) that the API answers with 400.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from django.conf import settings

from config.errors import (
    JSONDuplicateKey,
    JSONInvalidText,
    JSONNumberOutOfRange,
    JSONRefused,
    JSONSyntaxError,
    JSONTooDeep,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# A NUL or any UTF-16 surrogate: json.loads pairs valid surrogate escapes into one character,
# so a surrogate left in a str is a lone one.
BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
# Errors listed per refusal: enough to fix a body, bounded for a body made of nothing else.
MAX_PROBLEMS = 20
# In JSON text, an escape that makes a NUL or a surrogate. A false alarm (an escaped backslash
# before "u0000") only costs the walk.
SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
# What json.loads builds for arrays and objects (an object with a key twice is flagged anyway).
CONTAINERS = (dict, list)
NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
BRACKET_DEPTH = {"[": 1, "{": 1, "]": -1, "}": -1}

SUMMARIES: dict[type[JSONRefused], str] = {
    JSONTooDeep: "The JSON is nested deeper than {depth} levels.",
    JSONInvalidText: "The JSON contains text that cannot be stored: a NUL character or a lone UTF-16 surrogate.",
    JSONNumberOutOfRange: (
        f"The JSON contains a number out of range: integers must lie between {INT64_MIN} and {INT64_MAX}, "
        "other numbers must be finite."
    ),
    JSONDuplicateKey: "The JSON names the same key twice in one object.",
}


class _OutOfRange(str):
    """A number the parser read but that is out of range, kept as its text until it is reported."""


class _DuplicateKeys(dict[str, Any]):
    """An object that named some keys more than once (``duplicates``), kept until it is reported."""

    duplicates: list[str]


@dataclass(frozen=True)
class Problem:
    error: type[JSONRefused]
    path: str
    message: str


def json_loads_checked(raw: bytes | str, *, root: str = "") -> Any:
    """The JSON value of ``raw`` (UTF-8 when bytes), or a ``JSONRefused`` error saying why not.

    ``root`` prefixes the paths in the error's field errors (``input`` gives ``input.note``).
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInvalidText(f"The JSON is not UTF-8 text (byte {exc.start} is not valid there).") from None
    else:
        text = raw
    hooks = _Hooks()
    try:
        value = json.loads(
            text,
            object_pairs_hook=hooks.object,
            parse_int=hooks.int,
            parse_float=hooks.float,
            parse_constant=_constant,
        )
    except RecursionError:
        # Python's parser recurses once per level: far deeper than the limit, it gives up first.
        raise _refusal([Problem(JSONTooDeep, root or "non_field_errors", _depth_message())]) from None
    except json.JSONDecodeError as exc:
        raise JSONSyntaxError(f"The JSON is not valid: {exc}.") from None
    # Most bodies are fine, and that is quicker to see than every value's check: the hooks saw no
    # number out of range and no key twice, no escape in the text makes a NUL or a surrogate, and
    # the containers do not nest too deep. Otherwise the walk finds each problem and its path.
    if hooks.flagged or _suspect_text(text, decoded=isinstance(raw, bytes)) or _too_deep(text, value):
        json_value_check(value, root=root)
    return value


class CheckedJSONDecoder(json.JSONDecoder):
    """``json_loads_checked`` behind ``json.loads(text, cls=...)``: for Django's forms.JSONField
    (the admin's JSON fields), which turns a JSONDecodeError into the field's error."""

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return json_loads_checked(s)
        except JSONRefused as exc:
            raise json.JSONDecodeError(exc.message, s, 0) from None


def json_value_check(value: Any, *, root: str = "") -> None:
    """Raise the ``JSONRefused`` error for the first problem of ``value``, if it has any."""
    problems = json_value_problems(value, root=root)
    if problems:
        raise _refusal(problems)


def json_value_errors(value: Any, *, root: str = "") -> dict[str, list[str]]:
    """The problems of an already parsed JSON value, as field errors by path (empty: none)."""
    errors: dict[str, list[str]] = {}
    for problem in json_value_problems(value, root=root):
        errors.setdefault(problem.path, []).append(problem.message)
    return errors


def json_value_problems(value: Any, *, root: str = "") -> list[Problem]:
    """Walk ``value`` without recursion and list up to MAX_PROBLEMS problems.

    Only containers go on the stack; scalars are checked where they stand, and a path is built
    only for a problem (where a value is: a chain of (key, parent chain) pairs).
    """
    max_depth: int = settings.JSON_MAX_DEPTH
    problems: list[Problem] = []

    def report(error: type[JSONRefused], where: tuple[Any, ...] | None, message: str) -> None:
        problems.append(Problem(error, _path(root, where), message))

    stack: list[tuple[Any, tuple[Any, ...] | None, int]] = []
    _check_value(value, None, 1, stack, report)
    while stack and len(problems) < MAX_PROBLEMS:
        node, where, depth = stack.pop()
        if depth > max_depth:
            report(JSONTooDeep, where, _depth_message())
            continue
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, dict):
            if isinstance(node, _DuplicateKeys):
                for name in node.duplicates:
                    report(JSONDuplicateKey, (name, where), "appears twice")
            for name in node:
                if type(name) is str and not _clean(name):
                    report(JSONInvalidText, (name, where), "the key " + _text_flaw(name))
            items = node.items()
        else:
            items = enumerate(node)
        for key, child in items:
            kind = type(child)
            # The common JSON types first, by exact type: this loop sees every value of a body.
            if kind is str:
                if not _clean(child):
                    report(JSONInvalidText, (key, where), _text_flaw(child))
            elif kind is int:
                if not INT64_MIN <= child <= INT64_MAX:
                    report(JSONNumberOutOfRange, (key, where), _number_message(str(child)))
            elif kind is dict or kind is list:
                stack.append((child, (key, where), depth + 1))
            elif kind is float:
                if not math.isfinite(child):
                    report(JSONNumberOutOfRange, (key, where), "is not a finite number")
            elif not (kind is bool or child is None):
                _check_value(child, (key, where), depth + 1, stack, report)
    return problems[:MAX_PROBLEMS]


def _check_value(
    value: Any,
    where: tuple[Any, ...] | None,
    depth: int,
    stack: list[tuple[Any, tuple[Any, ...] | None, int]],
    report: Callable[[type[JSONRefused], tuple[Any, ...] | None, str], None],
) -> None:
    """Any value, subclasses included: a container goes on the stack, a scalar is checked."""
    if isinstance(value, dict | list | tuple):
        stack.append((value, where, depth))
    elif isinstance(value, _OutOfRange):
        report(JSONNumberOutOfRange, where, _number_message(value))
    elif isinstance(value, str):
        if not _clean(value):
            report(JSONInvalidText, where, _text_flaw(value))
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            report(JSONNumberOutOfRange, where, _number_message(str(value)))
    elif isinstance(value, float) and not math.isfinite(value):
        report(JSONNumberOutOfRange, where, "is not a finite number")


def _clean(text: str) -> bool:
    # ASCII text (most of it) can hold a NUL but no surrogate: a substring test is enough.
    if text.isascii():
        return "\x00" not in text
    return BAD_TEXT.search(text) is None


# --- The parser's hooks: they mark what is wrong; the walk reports it with its path -------------------


class _Hooks:
    """The parser's hooks for one text: they mark what is wrong (the walk reports it with its path)
    and note that they did."""

    def __init__(self) -> None:
        self.flagged = False

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) == len(pairs):
            return value
        self.flagged = True
        marked = _DuplicateKeys(value)
        marked.duplicates = []
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen and key not in marked.duplicates:
                marked.duplicates.append(key)
            seen.add(key)
        return marked

    def int(self, text: str) -> int | str:
        if len(text) < 19:
            return int(text)  # under 10**18 either way: within 64 bits
        # Longer text is out of range (JSON has no leading zeros), and converting it could cost
        # seconds, or raise past 4300 digits.
        number = int(text) if len(text) <= 20 else None
        if number is not None and INT64_MIN <= number <= INT64_MAX:
            return number
        self.flagged = True
        return _OutOfRange(text)

    def float(self, text: str) -> float | str:
        number = float(text)
        if math.isfinite(number):
            return number
        self.flagged = True
        return _OutOfRange(text)


def _suspect_text(text: str, *, decoded: bool) -> bool:
    """Whether a parsed text may hold a NUL or a lone surrogate (False: it holds none)."""
    # Valid JSON has no raw NUL, so a NUL or a surrogate comes from a \\u escape...
    if "\\u" in text and SUSPECT_ESCAPE.search(text):
        return True
    # ... or, in a str from Python (bytes decoded from UTF-8 cannot hold one), as it is.
    if decoded or text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _too_deep(text: str, value: Any) -> bool:
    """Whether ``value``'s arrays and objects nest deeper than the limit."""
    max_depth: int = settings.JSON_MAX_DEPTH
    if text.count("[") + text.count("{") <= max_depth:
        return False  # fewer brackets than levels, strings included
    if '\\"' not in text:
        # No escaped quote: the strings are every other piece between quotes, and what is left
        # holds the brackets that nest (C speed, unlike a walk of every container).
        brackets = NOT_BRACKETS.sub("", "".join(text.split('"')[::2]))
        return max(accumulate(map(BRACKET_DEPTH.__getitem__, brackets)), default=0) > max_depth
    stack = [(value, 1)] if type(value) in CONTAINERS else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) in CONTAINERS:
                stack.append((child, depth + 1))
    return False


def _constant(name: str) -> Any:
    raise JSONSyntaxError(f"The JSON is not valid: {name} is not a JSON value.")


# --- Messages ------------------------------------------------------------------------------------------


def _refusal(problems: list[Problem]) -> JSONRefused:
    error = problems[0].error
    errors: dict[str, list[str]] = {}
    for problem in problems:
        errors.setdefault(problem.path, []).append(problem.message)
    summary = SUMMARIES[error].format(depth=settings.JSON_MAX_DEPTH)
    return error(summary, details={"errors": errors})


def _depth_message() -> str:
    return f"is nested deeper than {settings.JSON_MAX_DEPTH} levels"


def _number_message(text: str) -> str:
    shown = text if len(text) <= 30 else f"{text[:12]}... ({len(text)} characters)"
    if any(mark in text for mark in ".eE"):
        return f"{shown} is beyond the range of a number"
    return f"{shown} is out of range: integers must lie between {INT64_MIN} and {INT64_MAX}"


def _text_flaw(text: str) -> str:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    return "contains a lone UTF-16 surrogate, which is not Unicode text"


def _path(root: str, where: tuple[Any, ...] | None) -> str:
    parts: list[str] = []
    while where is not None:
        key, where = where
        parts.append(_shown_key(key))
    parts.reverse()
    return ".".join([root, *parts] if root else parts) or "non_field_errors"


def _shown_key(key: Any) -> str:
    text = str(key)
    if BAD_TEXT.search(text):
        # The error body must itself be storable and encodable: escape what the key is refused for.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")
    return text if len(text) <= 64 else text[:61] + "..."
