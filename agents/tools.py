"""The tool registry: typed tools with a risk class, validated in and out.

Every call receives an idempotency key and must be safe to run twice with the same key.
The demo tools register themselves from ``agents.demo.tools`` when the app is ready.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from config.parsing import json_value_errors


class Risk:
    READ = "read"
    WRITE_REVERSIBLE = "write_reversible"
    WRITE_IRREVERSIBLE = "write_irreversible"
    FINANCIAL = "financial"
    CHOICES = (READ, WRITE_REVERSIBLE, WRITE_IRREVERSIBLE, FINANCIAL)


# Not a tool: the name under which a flagged final answer waits for a person in the ledger.
FINAL_ANSWER = "final_answer"


@dataclass(frozen=True)
class ToolContext:
    idempotency_key: str
    run_id: int | None = None
    agent_slug: str = ""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    risk: str
    reversible: bool
    func: Callable[[Any, ToolContext], Any]
    # Tools that ask a person (ask_human) are answered by a reviewer, never executed.
    asks_human: bool = False
    # Finds the output of an earlier call with this idempotency key, if its effect exists:
    # how a call left "executing" by a crash is reconciled instead of blindly retried.
    lookup: Callable[[str], dict[str, Any] | None] | None = None
    timeout_seconds: float = 30.0
    # False for tools that take no idempotency key (tools from MCP servers): the ledger never
    # retries them, and a failure it cannot explain leaves the outcome unknown for a person.
    idempotent: bool = True

    @property
    def low_risk(self) -> bool:
        return self.risk in (Risk.READ, Risk.WRITE_REVERSIBLE) and self.reversible

    @property
    def is_read_only(self) -> bool:
        return self.risk == Risk.READ

    @property
    def permission(self) -> str:
        return f"agents.use_{self.name}"

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """Validated, normalized arguments; raises ToolArgumentsInvalid with field errors.

        Strict, as JSON: "100" is not a number, 1 is not true. What a reviewer approves is
        exactly what runs, so nothing is coerced on the way. The values must also be storable:
        bounded nesting, no NUL or lone surrogate, integers within signed 64 bits.
        """
        if not isinstance(arguments, dict):
            raise ToolArgumentsInvalid(self.name, {"arguments": ["must be a JSON object"]})
        problems = json_value_errors(arguments)
        if problems:
            raise ToolArgumentsInvalid(self.name, problems)
        try:
            text = json.dumps(arguments, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ToolArgumentsInvalid(self.name, {"arguments": [f"must be JSON: {exc}"]}) from None
        try:
            # JSON mode: the arguments are JSON, so a date or a UUID may come as its string, strictly.
            validated = self.input_model.model_validate_json(text, strict=True)
        except ValidationError as exc:
            raise ToolArgumentsInvalid(self.name, validation_errors(exc)) from None
        return validated.model_dump(mode="json")

    def run(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        parsed = self.input_model.model_validate(arguments)
        result = self.func(parsed, context)
        output = self.output_model.model_validate(result)
        return output.model_dump(mode="json")


class ToolArgumentsInvalid(Exception):
    def __init__(self, tool: str, errors: dict[str, list[str]]) -> None:
        super().__init__(f"Arguments for {tool} are invalid: {errors}")
        self.tool = tool
        self.errors = errors


class ToolFailed(Exception):
    """The tool answered that the call failed (or answered outside its schema): the outcome is
    known, so the call is recorded as failed, never as unknown."""


def validation_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "arguments"
        errors.setdefault(field, []).append(error["msg"])
    return errors


def arguments_hash(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Registry(dict[str, Tool]):
    """The built-in tools, then the tools of other sources (MCP servers) by their namespaced name.

    A source is a function from a name to a Tool or None (it keeps its own cache); a lister
    gives the names a source knows, for the pages that offer a choice of tools.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[Callable[[str], Tool | None]] = []
        self.listers: list[Callable[[], list[str]]] = []

    def names(self) -> list[str]:
        """Every tool name: the built-in ones, then those of the other sources."""
        return sorted(self) + sorted(name for lister in self.listers for name in lister())

    def _resolve(self, name: object) -> Tool | None:
        if not isinstance(name, str):
            return None
        for source in self.sources:
            tool = source(name)
            if tool is not None:
                return tool
        return None

    def __missing__(self, name: str) -> Tool:
        tool = self._resolve(name)
        if tool is None:
            raise KeyError(name)
        return tool

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or self._resolve(name) is not None

    def get(self, name: str, default: Tool | None = None) -> Tool | None:  # type: ignore[override]
        return super().get(name) or self._resolve(name) or default


registry = Registry()


def register(tool: Tool) -> Tool:
    if tool.risk not in Risk.CHOICES:
        raise ValueError(f"{tool.name}: unknown risk class {tool.risk!r}")
    if tool.name == FINAL_ANSWER:
        raise ValueError(f"{FINAL_ANSWER!r} is reserved for final answers that wait for a person.")
    registry[tool.name] = tool
    return tool
