from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from audit.types import JSON, JSONObject


class ReasonerError(Exception):
    """The model could not be reached or answered unusably after retries."""


@dataclass
class Action:
    """What a reasoner proposes: a tool call, a final answer, or output it could not parse."""

    kind: Literal["tool", "final", "invalid"]
    tool: str = ""
    arguments: JSON = None
    rationale: str = ""
    answer: JSON = None
    error: str = ""
    # The id the model gave its call, kept so that the answering tool message carries it back.
    call_id: str = ""
    model: str = ""  # the model that answered; empty when no model was asked
    finish_reason: str = ""  # why the model stopped, as its reply said ("tool_calls", "stop", ...)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal("0")
    latency_ms: int = 0
    transcript: JSONObject = field(default_factory=dict)
    # The redacted end of the history the reasoner answered (for the audit log).
    prompt_tail: list[JSONObject] = field(default_factory=list)
    # The further calls of the same reply, in order: each goes through the policy on its own.
    others: list[Action] = field(default_factory=list)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: JSONObject  # the tool's JSON schema


@dataclass(frozen=True)
class ModelSettings:
    """How the agent asks its model; empty or None leaves the choice to the server's default."""

    model: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    tool_choice: str = "auto"  # "auto", "required", or the name of one tool


@dataclass(frozen=True)
class RunView:
    """The redacted view of a run that a reasoner reasons over."""

    objective: str
    scope: str
    system_prompt: str
    input: JSONObject
    history: list[JSONObject]
    tools: list[ToolSpec]
    playbook: JSONObject
    model: ModelSettings = field(default_factory=ModelSettings)


class Reasoner:
    def next_action(self, view: RunView) -> Action:
        raise NotImplementedError
