"""The offline `mock` protocol: deterministic answers in exact Anthropic shape, for demos and load tests.

The reply text is derived from the request, usage numbers are plausible for its size (a prompt that
carries `cache_control` reads most of itself from the cache), and a stream follows Anthropic's
event sequence: message_start, content_block_start, ping, text deltas, content_block_stop,
message_delta, message_stop. Timing (time to first token, tokens per second) is returned as data;
the caller sleeps.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

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


def _plan(body: Mapping[str, Any]) -> tuple[list[str], str]:
    tokens = reply_tokens(body)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
        return tokens[:max_tokens], "max_tokens"
    return tokens, "end_turn"


def _usage_dict(usage: Usage) -> dict[str, Any]:
    return {**usage.as_dict(), "service_tier": "standard"}


def _final_usage(usage: Usage, cost: float | None) -> dict[str, Any]:
    final: dict[str, Any] = {"output_tokens": usage.output_tokens}
    if cost is not None:
        final["cost"] = cost
    return final


def message(body: Mapping[str, Any], *, message_id: str, model: str, provider: str) -> dict[str, Any]:
    tokens, stop_reason = _plan(body)
    usage = usage_for(body, len(tokens))
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
            "content": [{"type": "text", "text": "".join(tokens)}], "stop_reason": stop_reason,
            "stop_sequence": None, "usage": _usage_dict(usage)}


def stream_events(body: Mapping[str, Any], *, message_id: str, model: str, provider: str,
                  cost: float | None = None) -> list[bytes]:
    tokens, stop_reason = _plan(body)
    usage = usage_for(body, len(tokens))
    start_usage = {**_usage_dict(usage), "output_tokens": 1}
    events = [
        encode_event("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        encode_event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}}),
        encode_event("ping", {"type": "ping"}),
    ]
    for token in tokens:
        events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                           "delta": {"type": "text_delta", "text": token}}))
    events += [
        encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        encode_event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                       "usage": _final_usage(usage, cost)}),
        encode_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def usage_of(body: Mapping[str, Any]) -> Usage:
    tokens, _ = _plan(body)
    return usage_for(body, len(tokens))
