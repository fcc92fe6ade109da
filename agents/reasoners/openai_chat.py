"""OpenAI-compatible chat completions with tool calling (OpenAI, vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from email.utils import parsedate_to_datetime

import httpx
from django.conf import settings

from agents.pricing import model_cost
from agents.reasoners.base import Action, Reasoner, ReasonerError, RunView
from audit.types import JSON, JSONObject
from config.errors import JSONRefused
from config.parsing import json_loads_checked

logger = logging.getLogger(__name__)

WIRE_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# Besides every 5xx: the answers that say "try again later".
RETRYABLE_STATUS = {408, 409, 425, 429}


def _tool_message(call_id: str, answers: list[JSONObject]) -> JSONObject:
    """The one tool message that answers a call: the person's decision and the observation together."""
    content: JSONObject = {}
    for answer in answers:
        for key in ("status", "output", "error", "comment"):
            if answer.get(key):
                content[key] = answer[key]
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content)}


def build_messages(view: RunView) -> list[JSONObject]:
    """The chat history: each assistant tool call is followed at once by exactly one tool
    message for its id (the chat-completions protocol refuses a second one or a gap)."""
    system = (
        f"{view.system_prompt}\n\nObjective: {view.objective}\nScope: {view.scope}\n"
        "Use the tools to act. When the work is done, reply with the final answer as plain text."
    ).strip()
    messages: list[JSONObject] = [
        {"role": "system", "content": system},
        {"role": "user", "content": json.dumps(view.input, ensure_ascii=False)},
    ]
    answers: dict[str, list[JSONObject]] = {}
    for entry in view.history:
        if entry["type"] == "observation":
            answers.setdefault(entry["call_id"], []).append(entry)
    for entry in view.history:
        if entry["type"] == "tool_call" and not entry["tool"]:
            # A reply that named no tool (cut off, or no message at all): said so in words, as
            # a call without a function name is not a valid assistant message.
            errors = [answer["error"] for answer in answers.get(entry["id"], []) if answer.get("error")]
            messages.append({"role": "user", "content": f"Your previous reply could not be used: {'; '.join(errors)}"})
        elif entry["type"] == "tool_call":
            messages.append(
                {
                    "role": "assistant",
                    # Text, not null: OpenAI takes either beside tool_calls; llama-cpp-python only text.
                    "content": entry.get("rationale") or "",
                    "tool_calls": [
                        {
                            "id": entry["id"],
                            "type": "function",
                            "function": {
                                "name": wire_name(entry["tool"]),
                                # Arguments that were not JSON were refused; the call is still an object.
                                "arguments": json.dumps(
                                    entry["arguments"] if entry.get("arguments") is not None else {}
                                ),
                            },
                        }
                    ],
                }
            )
            # A call still waiting for a person has no answer yet; the model is not asked then.
            if entry["id"] in answers:
                messages.append(_tool_message(entry["id"], answers[entry["id"]]))
        elif entry["type"] == "note":
            messages.append({"role": "user", "content": entry["text"]})
    return messages


def wire_name(name: str) -> str:
    """A tool's name as OpenAI accepts it (``^[a-zA-Z0-9_-]{1,64}$``): an MCP tool's
    ``server.tool`` becomes ``server__tool``; a longer or stranger name is shortened with a hash."""
    wire = name.replace(".", "__")
    if WIRE_NAME.fullmatch(wire):
        return wire
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', wire)[:55]}_{digest}"


def parse_reply(reply: JSON, *, names: dict[str, str] | None = None) -> Action:
    """The reply's tool calls (the first, with the others in ``others``, in the model's order), or
    its text as the final answer; unusable output is "invalid"."""
    try:
        choice = reply["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        return Action(kind="invalid", error="The model's reply has no message.", transcript=reply)
    transcript = {"message": message}
    finish_reason = str(choice.get("finish_reason") or "")
    tool_calls = message.get("tool_calls") or []
    if finish_reason == "length":
        # Cut off at max_tokens: neither a whole answer nor a whole call.
        return Action(
            kind="invalid",
            error="The reply was cut off at the token limit (finish_reason length); no action was taken.",
            finish_reason=finish_reason,
            transcript=transcript,
        )
    if not tool_calls:
        return Action(
            kind="final",
            answer={"text": message.get("content") or ""},
            finish_reason=finish_reason,
            transcript=transcript,
        )
    first, *others = [_call_action(call, finish_reason=finish_reason, names=names or {}) for call in tool_calls]
    first.rationale = message.get("content") or ""
    first.transcript = transcript
    first.others = others
    return first


def _call_action(call: JSON, *, finish_reason: str, names: dict[str, str]) -> Action:
    """One tool call of a reply as a proposed action ("invalid" when its arguments are not JSON)."""
    if not isinstance(call, dict):
        return Action(kind="invalid", error="A tool call of the reply is not an object.", finish_reason=finish_reason)
    function = call.get("function") or {}
    name = str(function.get("name") or "")
    name = names.get(name, name)  # back from the wire name to the registry's
    raw = function.get("arguments") or "{}"
    call_id = str(call.get("id") or "")
    try:
        arguments = json_loads_checked(raw) if isinstance(raw, str) else raw
    except JSONRefused as exc:
        return Action(
            kind="invalid",
            tool=name,
            error=f"Tool arguments are not valid JSON: {exc.message}",
            call_id=call_id,
            finish_reason=finish_reason,
        )
    return Action(kind="tool", tool=name, arguments=arguments, call_id=call_id, finish_reason=finish_reason)


def request_body(view: RunView) -> JSONObject:
    """The chat-completions request: the agent's model settings, and tools only when it has some
    (OpenAI refuses an empty "tools" list)."""
    settings_ = view.model
    body: JSONObject = {"model": settings_.model or settings.LLM_MODEL, "messages": build_messages(view)}
    if settings_.temperature is not None:
        body["temperature"] = settings_.temperature
    if settings_.max_tokens is not None:
        body["max_tokens"] = settings_.max_tokens
    if view.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": wire_name(t.name), "description": t.description, "parameters": t.parameters},
            }
            for t in view.tools
        ]
        choice = settings_.tool_choice or "auto"
        body["tool_choice"] = (
            choice
            if choice in ("auto", "required", "none")
            else {"type": "function", "function": {"name": wire_name(choice)}}
        )
    return body


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): the server's Retry-After when it gives
    one (capped), else exponential backoff with full jitter, so that many runs do not retry in step."""
    cap = settings.LLM_RETRY_MAX_SECONDS
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), cap)
        except ValueError:
            try:
                when = parsedate_to_datetime(retry_after)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return min(max(when.timestamp() - time.time(), 0.0), cap)
    return random.uniform(0, min(0.25 * 2 ** (attempt - 1), cap))


class OpenAIChatReasoner(Reasoner):
    def __init__(self, *, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(timeout=settings.LLM_TIMEOUT_SECONDS)

    def next_action(self, view: RunView) -> Action:
        body = request_body(view)
        started = time.monotonic()
        reply = self._post(body)
        action = parse_reply(reply, names={wire_name(t.name): t.name for t in view.tools})
        action.latency_ms = int((time.monotonic() - started) * 1000)
        usage = reply.get("usage") or {}
        action.model = str(body["model"])
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
        retry_after: str | None = None
        for attempt in range(settings.LLM_MAX_RETRIES + 1):
            if attempt:
                time.sleep(retry_delay(attempt, retry_after))
            retry_after = None
            try:
                response = self.client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("model endpoint unreachable (attempt %s): %s", attempt + 1, type(exc).__name__)
                continue
            if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
                last_error = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
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
