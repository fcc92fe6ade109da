"""Reasoners turn a run's history into the next action. They never touch the database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.reasoners.base import Action, Reasoner, ReasonerError

if TYPE_CHECKING:
    from agents.models import Agent

__all__ = ["Action", "Reasoner", "ReasonerError", "reasoner_for"]


def reasoner_for(agent: Agent) -> Reasoner:
    if agent.reasoner == "openai":
        from agents.reasoners.openai_chat import OpenAIChatReasoner

        return OpenAIChatReasoner()
    from agents.reasoners.scripted import ScriptedReasoner

    return ScriptedReasoner()
