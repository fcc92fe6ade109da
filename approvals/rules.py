"""Business rules: a condition on a tool's arguments and what it makes the policy do."""

from __future__ import annotations

import re

from agents.conditions import LIST_OPERATORS, NUMERIC_OPERATORS, as_number, rule_matches
from agents.tools import registry
from audit.types import JSON, JSONObject

__all__ = ["field_value", "rule_errors", "rule_matches"]


def field_value(arguments: JSONObject, field: str) -> JSON:
    """The value a rule looks at; ``name:domain`` takes the domain part of an address."""
    name, _, transform = field.partition(":")
    value = arguments.get(name)
    if transform == "domain" and isinstance(value, str):
        return value.rsplit("@", 1)[-1].lower()
    return value


def rule_errors(*, tool: str, field: str, operator: str, value: JSON) -> dict[str, list[str]]:
    """What is wrong with a rule's condition, by field; empty when it can be evaluated."""
    errors: dict[str, list[str]] = {}
    spec = registry.get(tool)
    if spec is None:
        errors["tool"] = [f"Unknown tool {tool!r}."]
    else:
        name = field.partition(":")[0]
        if name not in spec.input_schema().get("properties", {}):
            errors["field"] = [f"{tool} has no argument {name!r}."]
    if operator in NUMERIC_OPERATORS and as_number(value) is None:
        errors["value"] = [f"Operator {operator} needs a number."]
    if operator in LIST_OPERATORS and not isinstance(value, list):
        errors["value"] = [f"Operator {operator} needs a list of values."]
    if operator == "matches":
        try:
            re.compile(str(value))
        except re.error as exc:
            errors["value"] = [f"Not a valid regular expression: {exc}."]
    return errors
