"""OpenAI Responses API `Response` → Anthropic Message, and the pieces a stream shares with it.

Owns the answer-side mappings: output items → content blocks, status and incomplete_details →
stop_reason, usage → Anthropic usage, a reasoning item → a thinking block whose signature carries
the encrypted item back on the next turn.

Block rules, the same for JSON and streams: a reasoning item becomes one thinking block when it has
summary (or reasoning) text or encrypted content, its summary parts joined by blank lines; each
non-empty `output_text` or `refusal` part of a message becomes one text block; each function_call
one tool_use block (the call's `call_id` is the tool_use id). Other items (built-in tool calls the
request never asked for) are skipped.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.anthropic_input import list_at, mapping_at
from providers.openai_chat_response import message_id_for, tool_input, tool_use_id_for
from providers.openai_responses_request import encode_signature

SUMMARY_SEPARATOR = "\n\n"
STOP_REASON_BY_INCOMPLETE = {"max_output_tokens": "max_tokens", "content_filter": "refusal"}


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(int(value), 0)


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Responses usage in Anthropic's terms. `input_tokens` counts every prompt token; Anthropic's
    counts only those neither read from nor written to the cache, which have their own counts."""
    usage = usage or {}
    total = _count(usage.get("input_tokens"))
    details = mapping_at(usage, "input_tokens_details")
    cached = min(_count(details.get("cached_tokens")), total)
    written = min(_count(details.get("cache_write_tokens")), total - cached)
    return {"input_tokens": total - cached - written, "output_tokens": _count(usage.get("output_tokens")),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


def stop_reason_for(response: Mapping[str, Any], *, has_tool_use: bool, refusal_only: bool) -> str:
    """Anthropic's stop_reason for a finished (completed or incomplete) Response."""
    if response.get("status") == "incomplete":
        reason = mapping_at(response, "incomplete_details").get("reason")
        if reason in STOP_REASON_BY_INCOMPLETE:
            return STOP_REASON_BY_INCOMPLETE[reason]
    if has_tool_use:
        return "tool_use"
    return "refusal" if refusal_only else "end_turn"


def reasoning_text(item: Mapping[str, Any]) -> str:
    """The thinking a reasoning item shows: its summaries, else its raw reasoning text (open-weight
    servers send that)."""
    for key, kind in (("summary", "summary_text"), ("content", "reasoning_text")):
        texts = [p["text"] for p in list_at(item, key)
                 if isinstance(p, Mapping) and p.get("type") == kind and isinstance(p.get("text"), str) and p["text"]]
        if texts:
            return SUMMARY_SEPARATOR.join(texts)
    return ""


def reasoning_signature(item: Mapping[str, Any]) -> str:
    """The signature carrying a reasoning item back, or "" when it came without encrypted content."""
    item_id, encrypted = item.get("id"), item.get("encrypted_content")
    if isinstance(item_id, str) and item_id and isinstance(encrypted, str) and encrypted:
        return encode_signature(item_id, encrypted)
    return ""


def text_parts(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, text) of a message item's non-empty parts, kind being output_text or refusal."""
    parts = []
    for part in list_at(item, "content"):
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        text = part.get("text") if kind == "output_text" else part.get("refusal") if kind == "refusal" else None
        if isinstance(text, str) and text:
            parts.append((str(kind), text))
    return parts


def from_response(response: Mapping[str, Any], *, model: str, provider: str,
                  message_id: str | None = None) -> dict[str, Any]:
    """The Anthropic Message for a finished Response, carrying the router's `model` and `provider`.

    A 200 answer whose Response failed is an error, not a message: check `error_in_response` first.
    """
    msg_id = message_id or message_id_for(response.get("id"), orjson.dumps(response, option=orjson.OPT_SORT_KEYS,
                                                                           default=str))
    content: list[dict[str, Any]] = []
    kinds: set[str] = set()
    calls = 0
    for item in list_at(response, "output"):
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "reasoning":
            thinking, signature = reasoning_text(item), reasoning_signature(item)
            if thinking or signature:
                content.append({"type": "thinking", "thinking": thinking, "signature": signature})
        elif kind == "message":
            for part_kind, text in text_parts(item):
                kinds.add(part_kind)
                content.append({"type": "text", "text": text})
        elif kind == "function_call":
            content.append({"type": "tool_use",
                            "id": tool_use_id_for(item.get("call_id"), message_id=msg_id, position=calls),
                            "name": str(item.get("name", "")), "input": tool_input(item.get("arguments"))})
            calls += 1
    stop_reason = stop_reason_for(response, has_tool_use=calls > 0, refusal_only=kinds == {"refusal"})
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": anthropic_usage(mapping_at(response, "usage"))}
