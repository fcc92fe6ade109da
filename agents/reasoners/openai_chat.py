"""OpenAI-compatible chat completions with tool calling (OpenAI, vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

import json
import logging
import time

import httpx
from django.conf import settings

from agents.pricing import model_cost
from agents.reasoners.base import Action, Reasoner, ReasonerError, RunView
from audit.types import JSON, JSONObject
from config.errors import JSONRefused
from config.parsing import json_loads_checked

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def build_messages(view: RunView) -> list[JSONObject]:
    system = (
        f"{view.system_prompt}\n\nObjective: {view.objective}\nScope: {view.scope}\n"
        "Use the tools to act. When the work is done, reply with the final answer as plain text."
    ).strip()
    messages: list[JSONObject] = [
        {"role": "system", "content": system},
        {"role": "user", "content": json.dumps(view.input, ensure_ascii=False)},
    ]
    for entry in view.history:
        if entry["type"] == "tool_call":
            messages.append(
                {
                    "role": "assistant",
                    "content": entry.get("rationale") or None,
                    "tool_calls": [
                        {
                            "id": entry["id"],
                            "type": "function",
                            "function": {"name": entry["tool"], "arguments": json.dumps(entry.get("arguments"))},
                        }
                    ],
                }
            )
        elif entry["type"] == "observation":
            content = {key: entry[key] for key in ("status", "output", "error", "comment") if entry.get(key)}
            messages.append({"role": "tool", "tool_call_id": entry["call_id"], "content": json.dumps(content)})
        elif entry["type"] == "note":
            messages.append({"role": "user", "content": entry["text"]})
    return messages


def parse_reply(reply: JSON) -> Action:
    """The first tool call of the reply, or its text as the final answer; unusable output is "invalid"."""
    try:
        message = reply["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return Action(kind="invalid", error="The model's reply has no message.", transcript=reply)
    transcript = {"message": message}
    tool_calls = message.get("tool_calls") or []
    if not tool_calls:
        return Action(kind="final", answer={"text": message.get("content") or ""}, transcript=transcript)
    function = tool_calls[0].get("function") or {}
    name = function.get("name") or ""
    raw = function.get("arguments") or "{}"
    try:
        arguments = json_loads_checked(raw) if isinstance(raw, str) else raw
    except JSONRefused as exc:
        return Action(
            kind="invalid", tool=name, error=f"Tool arguments are not valid JSON: {exc.message}", transcript=transcript
        )
    return Action(
        kind="tool", tool=name, arguments=arguments, rationale=message.get("content") or "", transcript=transcript
    )


def finish_reason(reply: JSON) -> str:
    try:
        return str(reply["choices"][0].get("finish_reason") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


class OpenAIChatReasoner(Reasoner):
    def __init__(self, *, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(timeout=settings.LLM_TIMEOUT_SECONDS)

    def next_action(self, view: RunView) -> Action:
        body: JSONObject = {
            "model": settings.LLM_MODEL,
            "messages": build_messages(view),
            "tools": [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in view.tools
            ],
            "tool_choice": "auto",
        }
        started = time.monotonic()
        reply = self._post(body)
        action = parse_reply(reply)
        action.finish_reason = finish_reason(reply)
        action.latency_ms = int((time.monotonic() - started) * 1000)
        usage = reply.get("usage") or {}
        action.model = settings.LLM_MODEL
        action.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        action.completion_tokens = int(usage.get("completion_tokens") or 0)
        action.cost = model_cost(
            model=action.model, prompt_tokens=action.prompt_tokens, completion_tokens=action.completion_tokens
        )
        return action

    def _post(self, body: JSONObject) -> JSON:
        """The endpoint's decoded reply: a chat completion object when it keeps to the API."""
        url = settings.LLM_BASE_URL.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if settings.LLM_API_KEY:
            headers["Authorization"] = f"Bearer {settings.LLM_API_KEY}"
        last_error = ""
        for attempt in range(settings.LLM_MAX_RETRIES + 1):
            if attempt:
                time.sleep(min(0.25 * 2 ** (attempt - 1), 8))
            try:
                response = self.client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("model endpoint unreachable (attempt %s): %s", attempt + 1, type(exc).__name__)
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_error = f"HTTP {response.status_code}"
                logger.warning("model endpoint answered %s (attempt %s)", response.status_code, attempt + 1)
                continue
            if response.status_code >= 400:
                raise ReasonerError(f"The model endpoint refused the request: HTTP {response.status_code}.")
            try:
                return response.json()
            except ValueError:
                last_error = "the reply is not JSON"
                continue
        raise ReasonerError(f"The model endpoint failed after {settings.LLM_MAX_RETRIES + 1} attempts: {last_error}.")
