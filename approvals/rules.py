"""Business rules: a condition on a tool's arguments and what it makes the policy do."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from audit.types import JSON, JSONObject

if TYPE_CHECKING:
    from approvals.models import BusinessRule

NUMERIC_OPERATORS = {">", ">=", "<", "<="}
LIST_OPERATORS = {"in", "not_in"}


def field_value(arguments: JSONObject, field: str) -> JSON:
    """The value a rule looks at; ``name:domain`` takes the domain part of an address."""
    name, _, transform = field.partition(":")
    value = arguments.get(name)
    if transform == "domain" and isinstance(value, str):
        return value.rsplit("@", 1)[-1].lower()
    return value


def _number(value: JSON) -> Decimal | None:
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
        left, right = _number(actual), _number(expected)
        if left is None or right is None:
            return False
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[operator]
    if operator in {"==", "!="}:
        left_num, right_num = _number(actual), _number(expected)
        equal = left_num == right_num if left_num is not None and right_num is not None else actual == expected
        return equal if operator == "==" else not equal
    if operator in LIST_OPERATORS:
        options = [str(item).lower() for item in expected]
        found = str(actual).lower() in options
        return found if operator == "in" else not found
    if operator == "matches":
        return re.search(str(expected), str(actual)) is not None
    return False


def rule_errors(rule: BusinessRule) -> dict[str, list[str]]:
    from agents.tools import registry

    errors: dict[str, list[str]] = {}
    tool = registry.get(rule.tool)
    if tool is None:
        errors["tool"] = [f"Unknown tool {rule.tool!r}."]
    else:
        name = rule.field.partition(":")[0]
        if name not in tool.input_model.model_fields:
            errors["field"] = [f"{rule.tool} has no argument {name!r}."]
    if rule.operator in NUMERIC_OPERATORS and _number(rule.value) is None:
        errors["value"] = [f"Operator {rule.operator} needs a number."]
    if rule.operator in LIST_OPERATORS and not isinstance(rule.value, list):
        errors["value"] = [f"Operator {rule.operator} needs a list of values."]
    if rule.operator == "matches":
        try:
            re.compile(str(rule.value))
        except re.error as exc:
            errors["value"] = [f"Not a valid regular expression: {exc}."]
    return errors
