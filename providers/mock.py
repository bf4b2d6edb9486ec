"""The offline `mock` protocol: deterministic answers in exact Anthropic shape, for demos and load tests.

The reply text is derived from the request, usage numbers are plausible for its size (a prompt that
carries `cache_control` reads most of itself from the cache), and a stream follows Anthropic's
event sequence: message_start, per content block content_block_start / deltas /
content_block_stop (a ping after the first start), message_delta, message_stop. With `thinking` enabled a thinking block (with a
signature) comes first; with `tools` the mock calls one (see `chosen_tool`) with an input built from
the tool's `input_schema` (its required properties), and stops with `tool_use`. Timing (time to
first token, tokens per second) and `fail_status` are provider options, which `local_answer`
turns into an answer the executor paces.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from providers import protocol
from providers.anthropic import Passthrough
from providers.base import Usage
from providers.sse import encode_event

_CHARS_PER_TOKEN = 4
_WORDS = ("The", "gateway", "answered", "this", "request", "offline", "with", "its", "mock", "provider,",
          "so", "no", "upstream", "was", "called", "and", "nothing", "was", "billed.")


def _last_user_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages") or []
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
                if texts:
                    return " ".join(texts)
    return ""


def _size_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_size_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_size_chars(v) for v in value)
    return 1


def _has_cache_control(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_cache_control(v) for v in value)
    return False


def reply_tokens(body: Mapping[str, Any]) -> list[str]:
    """The reply as a list of token-sized pieces, each ending with its separating space."""
    prompt = _last_user_text(body)
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    words = list(_WORDS) + [f"(ref {digest})"]
    if prompt:
        words += ["You", "said:"] + prompt.split()[:24]
    return [w + " " for w in words[:-1]] + [words[-1]]


def usage_for(body: Mapping[str, Any], output_tokens: int) -> Usage:
    prompt_tokens = max(1, (_size_chars(body.get("system")) + _size_chars(body.get("messages"))
                            + _size_chars(body.get("tools"))) // _CHARS_PER_TOKEN)
    usage = Usage(output_tokens=output_tokens)
    if _has_cache_control(body) and prompt_tokens > 100:
        cached = prompt_tokens * 4 // 5
        usage.cache_read_input_tokens = cached
        usage.input_tokens = prompt_tokens - cached
    else:
        usage.input_tokens = prompt_tokens
    return usage


def _thinking_enabled(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _thinking_tokens(body: Mapping[str, Any]) -> list[str]:
    words = ["The", "user", "wrote:", *(_last_user_text(body).split()[:16] or ["nothing"]), "-", "an", "offline",
             "demo", "answer", "will", "do."]
    budget = body["thinking"].get("budget_tokens")
    if isinstance(budget, int) and 0 < budget < len(words):
        words = words[:budget]
    return [w + " " for w in words[:-1]] + [words[-1]]


def _signature(text: str) -> str:
    return base64.b64encode(hashlib.sha256(b"mock-thinking:" + text.encode()).digest()).decode()


def _custom_tools(body: Mapping[str, Any]) -> list[dict]:
    """Tools the mock can call: custom tools with a name (server tools are answered by their vendor)."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
            and t.get("type", "custom") == "custom"]


def _answers_tool_result(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    return last.get("role") == "user" and isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def chosen_tool(body: Mapping[str, Any]) -> dict | None:
    """The tool the mock calls: the one `tool_choice` names, the first for `any`, for `auto` the first
    whose name the prompt mentions (else the first); none for `none`, without tools, or when the
    conversation just answered a tool call (the mock then replies in text, so agent loops end)."""
    tools = _custom_tools(body)
    choice = body.get("tool_choice")
    kind = choice.get("type", "auto") if isinstance(choice, dict) else "auto"
    if not tools or kind == "none":
        return None
    if kind == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), None)
    if kind == "auto" and _answers_tool_result(body):
        return None
    if kind == "auto":
        prompt = _last_user_text(body).lower()
        return next((t for t in tools if t["name"].lower() in prompt), tools[0])
    return tools[0]


def example_value(schema: Any, prompt: str = "") -> Any:
    """A value that satisfies a JSON Schema's type, enum, const and required properties."""
    if not isinstance(schema, dict):
        return prompt[:60] or "example"
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_value(schema[key][0], prompt)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        return {name: example_value(properties.get(name), prompt) for name in required if isinstance(name, str)}
    if kind == "array":
        count = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 1
        return [example_value(schema.get("items"), prompt) for _ in range(max(count, 1))]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = prompt[:60] or "example"
    limit = schema.get("maxLength")
    return text[:limit] if isinstance(limit, int) and limit > 0 else text


@dataclass(slots=True)
class _Reply:
    thinking: list[str] | None
    text: list[str]
    tool: dict | None  # a tool_use block
    stop_reason: str

    @property
    def output_tokens(self) -> int:
        tool = len(orjson.dumps(self.tool["input"])) // _CHARS_PER_TOKEN + 1 if self.tool else 0
        return len(self.thinking or ()) + len(self.text) + tool


def _plan(body: Mapping[str, Any], message_id: str = "") -> _Reply:
    thinking = _thinking_tokens(body) if _thinking_enabled(body) else None
    tool = chosen_tool(body)
    if tool is not None:
        block_id = "toolu_" + hashlib.sha256((message_id + tool["name"]).encode()).hexdigest()[:24]
        use = {"type": "tool_use", "id": block_id, "name": tool["name"],
               "input": example_value(tool.get("input_schema") or {"type": "object"}, _last_user_text(body))}
        return _Reply(thinking, [f"I will call {tool['name']}."], use, "tool_use")
    tokens = reply_tokens(body)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
        return _Reply(thinking, tokens[:max_tokens], None, "max_tokens")
    return _Reply(thinking, tokens, None, "end_turn")


def _usage_dict(usage: Usage) -> dict[str, Any]:
    return {**usage.as_dict(), "service_tier": "standard"}


def _final_usage(usage: Usage, cost: float | None) -> dict[str, Any]:
    final: dict[str, Any] = {"output_tokens": usage.output_tokens}
    if cost is not None:
        final["cost"] = cost
    return final


def _content(reply: _Reply) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if reply.thinking is not None:
        text = "".join(reply.thinking)
        content.append({"type": "thinking", "thinking": text, "signature": _signature(text)})
    content.append({"type": "text", "text": "".join(reply.text)})
    if reply.tool is not None:
        content.append(reply.tool)
    return content


def message(body: Mapping[str, Any], *, message_id: str, model: str, provider: str) -> dict[str, Any]:
    reply = _plan(body, message_id)
    usage = usage_for(body, reply.output_tokens)
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
            "content": _content(reply), "stop_reason": reply.stop_reason,
            "stop_sequence": None, "usage": _usage_dict(usage)}


def _block_events(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    events = [encode_event("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": start})]
    events += [encode_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
               for d in deltas]
    events.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def stream_events(body: Mapping[str, Any], *, message_id: str, model: str, provider: str,
                  cost: float | None = None) -> list[bytes]:
    reply = _plan(body, message_id)
    usage = usage_for(body, reply.output_tokens)
    start_usage = {**_usage_dict(usage), "output_tokens": 1}
    events = [
        encode_event("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
    ]
    index = 0
    if reply.thinking is not None:
        deltas = [{"type": "thinking_delta", "thinking": t} for t in reply.thinking]
        deltas.append({"type": "signature_delta", "signature": _signature("".join(reply.thinking))})
        events += _block_events(index, {"type": "thinking", "thinking": "", "signature": ""}, deltas)
        index += 1
    events += _block_events(index, {"type": "text", "text": ""},
                            [{"type": "text_delta", "text": t} for t in reply.text])
    index += 1
    if reply.tool is not None:
        arguments = orjson.dumps(reply.tool["input"]).decode()
        pieces = [arguments[i:i + 16] for i in range(0, len(arguments), 16)]
        events += _block_events(index, {**reply.tool, "input": {}},
                                [{"type": "input_json_delta", "partial_json": p} for p in pieces])
    events.insert(2, encode_event("ping", {"type": "ping"}))  # after the first content_block_start, as Anthropic does
    events += [
        encode_event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                                       "usage": _final_usage(usage, cost)}),
        encode_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def usage_of(body: Mapping[str, Any]) -> Usage:
    return usage_for(body, _plan(body).output_tokens)


def error_body(status: int) -> bytes:
    """What a mock configured with `fail_status` answers, in Anthropic's error envelope."""
    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": f"mock provider answers {status}"}})


_SSE = {"content-type": "text/event-stream"}
_JSON = {"content-type": "application/json"}


class Mock(Passthrough):
    """The `mock` protocol: Anthropic's wire format, answered in-process at the provider's simulated
    first-token latency and token rate (`ttft_ms`, `tokens_per_second`), or with `fail_status`."""

    local = True

    def options(self, attempt, require_parameters: bool):
        return attempt.provider.options  # the timings are the provider's

    def local_answer(self, call: protocol.Call) -> protocol.LocalAnswer:
        options = call.options
        ttft = options.ttft_ms / 1000
        if options.fail_status:  # a mock provider that is down, to show retries and fallbacks offline
            return protocol.LocalAnswer(options.fail_status, [(error_body(options.fail_status), 0.0)], ttft, _JSON)
        body = call.request.body
        if not call.request.stream:
            answer = message(body, message_id=call.message_id, model=call.model, provider=call.provider)
            return protocol.LocalAnswer(200, [(orjson.dumps(answer), 0.0)], ttft, _JSON)
        events = stream_events(body, message_id=call.message_id, model=call.model, provider=call.provider,
                               cost=call.price(usage_of(body)))
        rate = options.tokens_per_second
        if not rate:
            return protocol.LocalAnswer(200, [(b"".join(events), 0.0)], ttft, _SSE)
        pause = 1 / rate
        return protocol.LocalAnswer(200, [(event, pause if event.startswith(b"event: content_block_delta") else 0.0)
                                          for event in events], ttft, _SSE)


PROTOCOL = Mock()
