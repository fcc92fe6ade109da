"""A deterministic reasoner that follows the playbook in the agent's definition.

Playbook shape::

    {"steps": [
        {"id": "lookup", "tool": "kb_search", "arguments": {"query": "{{input.question}}"},
         "rationale": "Find the refund policy"},
        {"id": "refund", "tool": "issue_refund", "when": {"path": "input.amount", "op": ">", "value": 0},
         "arguments": {"amount": "{{input.amount}}", "currency": "USD"}},
        {"final": {"answer": "Refund: {{steps.refund.status}}"}}
    ]}

A value that is exactly one ``{{path}}`` keeps its type; inside a longer string it is
substituted as text. Paths start at ``input`` or ``steps.<id>.(status|output|error|comment)``.
Each step is proposed once; whatever its outcome (done, rejected, blocked, invalid) the
playbook moves on, so a scripted run always ends.
"""

from __future__ import annotations

import re

from agents.conditions import rule_matches
from agents.reasoners.base import Action, Reasoner, RunView
from audit.types import JSON, JSONObject

TEMPLATE = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")
WHOLE = re.compile(r"^\{\{\s*([\w.\-]+)\s*\}\}$")


def lookup(context: JSONObject, path: str) -> JSON:
    value: JSON = context
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render(template: JSON, context: JSONObject) -> JSON:
    if isinstance(template, str):
        whole = WHOLE.match(template)
        if whole:
            return lookup(context, whole.group(1))
        return TEMPLATE.sub(lambda m: "" if (v := lookup(context, m.group(1))) is None else str(v), template)
    if isinstance(template, dict):
        # A value that renders to nothing is left out, so the tool's default applies.
        rendered = {key: render(value, context) for key, value in template.items()}
        return {key: value for key, value in rendered.items() if value is not None}
    if isinstance(template, list):
        return [render(value, context) for value in template]
    return template


class ScriptedReasoner(Reasoner):
    def next_action(self, view: RunView) -> Action:
        steps_done: dict[str, JSONObject] = {}
        proposed: set[str] = set()
        calls: dict[str, str] = {}
        for entry in view.history:
            if entry["type"] == "tool_call" and entry.get("playbook_step"):
                proposed.add(entry["playbook_step"])
                calls[entry["id"]] = entry["playbook_step"]
                steps_done[entry["playbook_step"]] = {"status": "proposed", "arguments": entry.get("arguments")}
            elif entry["type"] == "observation" and entry.get("call_id") in calls:
                steps_done[calls[entry["call_id"]]].update(
                    status=entry.get("status"),
                    output=entry.get("output"),
                    error=entry.get("error", ""),
                    comment=entry.get("comment", ""),
                )
        context: JSONObject = {"input": view.input, "steps": steps_done}

        for index, step in enumerate(view.playbook.get("steps", [])):
            if "final" in step:
                return Action(kind="final", answer=render(step["final"], context))
            step_id = step.get("id") or f"step{index + 1}"
            if step_id in proposed:
                continue
            condition = step.get("when")
            if condition and not rule_matches(
                operator=condition.get("op", "=="),
                expected=condition.get("value"),
                actual=lookup(context, condition.get("path", "")),
            ):
                continue
            return Action(
                kind="tool",
                tool=step["tool"],
                arguments=render(step.get("arguments", {}), context),
                rationale=render(step.get("rationale", ""), context),
                transcript={"playbook_step": step_id},
            )
        return Action(kind="final", answer={"steps": {key: value["status"] for key, value in steps_done.items()}})
