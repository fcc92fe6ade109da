"""Comparing a value with an expected one: the conditions of business rules and of playbook steps.

Plain functions of JSON values, shared by the policy and the scripted reasoner.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from audit.types import JSON

NUMERIC_OPERATORS = {">", ">=", "<", "<="}
LIST_OPERATORS = {"in", "not_in"}


def as_number(value: JSON) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def rule_matches(*, operator: str, expected: JSON, actual: JSON) -> bool:
    if actual is None:
        # A rule about a field the call does not set: compare as absent (only != and not_in hold).
        return operator in {"!=", "not_in"}
    if operator in NUMERIC_OPERATORS:
        left, right = as_number(actual), as_number(expected)
        if left is None or right is None:
            return False
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[operator]
    if operator in {"==", "!="}:
        left_num, right_num = as_number(actual), as_number(expected)
        equal = left_num == right_num if left_num is not None and right_num is not None else actual == expected
        return equal if operator == "==" else not equal
    if operator in LIST_OPERATORS:
        options = [str(item).lower() for item in expected]
        found = str(actual).lower() in options
        return found if operator == "in" else not found
    if operator == "matches":
        return re.search(str(expected), str(actual)) is not None
    return False
