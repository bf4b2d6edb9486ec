"""What OpenAI's two inbound APIs (chat completions and Responses) share on their way to the canonical
Anthropic Messages request and back: pure functions, no I/O.

Owns the refusal of what the gateway cannot honour (`Refused`), the request fields both APIs map
the same way (sampling, stop, reasoning effort → thinking, structured output as a forced tool, the
router extensions), the OpenAI error envelope for an Anthropic error, and the reading of the
Anthropic stream the executor produces (`AnthropicEvents`).

Structured output (`response_format` / `text.format` json_schema) becomes a tool the model is made
to call, named `FORMAT_TOOL`, whose input is the answer: every Anthropic-protocol model honours a
forced tool, whereas structured output is a per-model capability. With thinking on, Anthropic
refuses a forced tool, so the schema travels as `output_config.format` instead.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import ROUTER_FIELDS
from providers.openai_chat_request import CHAT_TOOL_CHOICE, budget_for_effort
from providers.sse import EventSplitter, event_data

# Chat clients need not send a maximum; Anthropic needs one. A thinking request adds its budget.
DEFAULT_MAX_TOKENS = 4096
FORMAT_TOOL = "json_output"
_CHOICE_BY_CHAT = {chat: anthropic for anthropic, chat in CHAT_TOOL_CHOICE.items()}


class Refused(ValueError):
    """A request the gateway cannot serve as asked: a 400 naming the parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def require_object(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Refused(f"{name}: must be an object", name)
    return value


def require_list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise Refused(f"{name}: must be an array", name)
    return value


def text_of_parts(content: Any, name: str, kinds: tuple[str, ...]) -> str:
    """A system-like content (a string, or parts of the given text kinds) as one text."""
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(require_list(content, name)):
        part = require_object(part, f"{name}[{index}]")
        if part.get("type") not in kinds or not isinstance(part.get("text"), str):
            raise Refused(f"{name}[{index}]: only text parts are accepted here", name)
        texts.append(part["text"])
    return "\n\n".join(texts)


def common_fields(body: Mapping[str, Any], canonical: dict[str, Any]) -> None:
    """The fields both APIs name alike: sampling, the end user, the router's own extensions."""
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            canonical[name] = body[name]
    for name in ROUTER_FIELDS:
        if body.get(name) is not None:
            canonical[name] = body[name]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        canonical["metadata"] = {"user_id": user}
        canonical["user"] = user
    if body.get("stream") is not None:
        canonical["stream"] = body["stream"]


def tool_choice(choice: Any, name: str) -> dict[str, Any] | None:
    """A chat or Responses tool_choice as Anthropic's (None: the default, auto)."""
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _CHOICE_BY_CHAT:
            raise Refused(f"{name}: must be one of {', '.join(_CHOICE_BY_CHAT)} or a function", name)
        return {"type": _CHOICE_BY_CHAT[choice]}
    choice = require_object(choice, name)
    function = choice.get("function") if isinstance(choice.get("function"), Mapping) else choice
    if choice.get("type") != "function" or not isinstance(function.get("name"), str):
        raise Refused(f"{name}: only function tool choices are supported", name)
    return {"type": "tool", "name": function["name"]}


def function_tool(name: Any, description: Any, parameters: Any, strict: Any, where: str) -> dict[str, Any]:
    """A function tool as an Anthropic custom tool (no parameters: one taking an empty object)."""
    if not isinstance(name, str) or not name:
        raise Refused(f"{where}.name: required", where)
    tool: dict[str, Any] = {"name": name}
    if isinstance(description, str) and description:
        tool["description"] = description
    tool["input_schema"] = dict(parameters) if isinstance(parameters, Mapping) else {"type": "object",
                                                                                    "properties": {}}
    if isinstance(strict, bool):
        tool["strict"] = strict
    return tool


def apply_tools(canonical: dict[str, Any], tools: list[dict[str, Any]], choice: dict[str, Any] | None,
                parallel: Any) -> None:
    if tools:
        canonical["tools"] = tools
    if parallel is False and tools:
        choice = dict(choice or {"type": "auto"})
        choice["disable_parallel_tool_use"] = True
    if choice is not None and tools:  # a choice among no tools means nothing
        canonical["tool_choice"] = choice


def reasoning(canonical: dict[str, Any], effort: Any, max_tokens: Any, where: str) -> None:
    """`max_tokens` (the client's, or the default) and the thinking an effort level stands for.

    OpenAI counts reasoning inside the output maximum, as Anthropic counts thinking inside
    max_tokens: a budget that leaves no room for an answer is cut to fit, and a maximum too small to
    think in at all thinks not."""
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or max_tokens < 1):
        raise Refused(f"{where}: must be a positive integer", where)
    if effort is not None and not isinstance(effort, str):
        raise Refused("reasoning effort: must be a string", "reasoning_effort")
    thinks = effort is not None and effort != "none"
    if not thinks:
        canonical["max_tokens"] = max_tokens or DEFAULT_MAX_TOKENS
        return
    budget = budget_for_effort(effort)
    if max_tokens is None:
        max_tokens = budget + DEFAULT_MAX_TOKENS
    budget = min(budget, max_tokens - 1)
    canonical["max_tokens"] = max_tokens
    if budget >= budget_for_effort("low"):
        canonical["thinking"] = {"type": "enabled", "budget_tokens": budget}


def structured_output(canonical: dict[str, Any], fmt: Any, where: str) -> str | None:
    """A json_schema (or json_object) answer format; the name of the forced tool carrying it, if any."""
    if fmt is None:
        return None
    fmt = require_object(fmt, where)
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Mapping[str, Any] = {"type": "object"}
    elif kind == "json_schema":
        inner = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), Mapping) else fmt
        schema = inner.get("schema") if isinstance(inner.get("schema"), Mapping) else {"type": "object"}
    else:
        raise Refused(f"{where}.type: must be text, json_object or json_schema", where)
    if "thinking" in canonical:
        canonical["output_config"] = {"format": {"type": "json_schema", "schema": dict(schema)}}
        return None
    if "tools" in canonical:
        raise Refused(f"{where}: a JSON answer format together with tools is not supported", where)
    canonical["tools"] = [{"name": FORMAT_TOOL, "description": "Answer with the requested JSON.",
                           "input_schema": dict(schema)}]
    canonical["tool_choice"] = {"type": "tool", "name": FORMAT_TOOL}
    return FORMAT_TOOL


# -- errors ---------------------------------------------------------------------------------------

# Anthropic error type → OpenAI's (type, code); the codes are ones `openai_chat_errors` reads back
# as the same Anthropic type, so the two directions agree.
_OPENAI_ERROR = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "model_not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("requests", "rate_limit_exceeded"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "api_error": ("server_error", None),
    "timeout_error": ("server_error", "timeout"),
    "overloaded_error": ("server_error", "server_overloaded"),
}
# Anthropic's own status with no OpenAI twin: 529 is OpenAI's 503.
_OPENAI_STATUS = {529: 503}
BUDGET_SPENT = ("insufficient_quota", "insufficient_quota")


def openai_error(status: int, anthropic_body: bytes, *, budget: bool = False,
                 param: str | None = None) -> tuple[int, bytes]:
    """(status, body) of OpenAI's error envelope for an Anthropic error answer."""
    error_type, message = "api_error", ""
    try:
        parsed = orjson.loads(anthropic_body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    if isinstance(error, Mapping):
        error_type = str(error.get("type") or error_type)
        message = str(error.get("message") or "")
    kind, code = BUDGET_SPENT if budget else _OPENAI_ERROR.get(error_type, ("invalid_request_error"
                                                                         if status < 500 else "server_error",
                                                                         None))
    body = {"error": {"message": message or f"HTTP {status}", "type": kind, "param": param, "code": code}}
    return _OPENAI_STATUS.get(status, status), orjson.dumps(body)


def stream_error(error_type: str, message: str) -> bytes:
    """The chunk that ends a chat completions stream which failed midway (what OpenAI sends then)."""
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": error_type}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


# -- the Anthropic stream, read -------------------------------------------------------------------

class AnthropicEvents:
    """Feed it the Anthropic SSE bytes the executor sends; it returns each whole event's data as a dict."""

    def __init__(self) -> None:
        self._splitter = EventSplitter()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        block = self._splitter.feed(chunk)
        events = []
        for event in block.split(b"\n\n") if block else ():
            data = event_data(event)
            if not data:
                continue
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                events.append(parsed)
        return events


class StreamWriter(ABC):
    """The Anthropic stream, read event by event into another protocol's stream: `feed` takes the
    bytes the executor sends and returns the client's SSE bytes; a subclass writes each event."""

    def __init__(self, *, answer_id: str, created: int, shape: Any) -> None:
        self.answer_id = answer_id
        self.created = created
        self.shape = shape
        self.model: Any = None
        self.usage: dict[str, Any] = {}
        self.done = False  # the stream's last event is written: anything after it is ignored
        self._events = AnthropicEvents()

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._events.feed(chunk):
            if not self.done:
                self.event(event, out)
        return b"".join(out)

    @abstractmethod
    def event(self, event: Mapping[str, Any], out: list[bytes]) -> None:
        """Append the client's SSE bytes for one Anthropic event to `out`."""

    def started(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """A message_start's message, its model and usage kept."""
        message = event.get("message") if isinstance(event.get("message"), Mapping) else {}
        self.model = message.get("model")
        self.usage = dict(message.get("usage") or {})
        return message

    def ending(self, event: Mapping[str, Any]) -> Any:
        """A message_delta's stop reason, its usage counted."""
        self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        delta = event.get("delta") if isinstance(event.get("delta"), Mapping) else {}
        return delta.get("stop_reason")


def error_of_event(event: Mapping[str, Any]) -> tuple[str, str]:
    error = event.get("error") if isinstance(event.get("error"), Mapping) else {}
    return str(error.get("type") or "api_error"), str(error.get("message") or "the upstream failed")
