"""OpenAI chat completion → Anthropic Message, and the pieces a stream shares with it.

Owns the answer-side mappings: finish_reason → stop_reason, usage → Anthropic usage, tool-call
arguments → tool_use input, upstream ids → Anthropic-form ids.

Stop sequences: chat completions strip a matched stop sequence and answer finish_reason "stop",
exactly as for a natural end. A stop counts as `stop_sequence` only when a requested sequence can be
named: the upstream says which one matched (vLLM's `choice.stop_reason`, SGLang's
`choice.matched_stop`), or the text ends with one (upstreams that keep it). Otherwise, as always
with OpenAI itself, it is reported as `end_turn`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from providers.openai_chat_request import RAW_ARGUMENTS_KEY
from providers.anthropic_input import list_at, mapping_at

STOP_REASON_BY_FINISH = {
    "stop": "end_turn", "eos": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
    "function_call": "tool_use", "content_filter": "refusal"}


# The other direction, for answers to chat completions clients: the first finish_reason above that
# reads as each stop_reason, and the stop reasons chat completions have no name of their own for.
FINISH_BY_STOP_REASON = {**{stop: finish for finish, stop in reversed(STOP_REASON_BY_FINISH.items())},
                         "stop_sequence": "stop", "pause_turn": "stop", "model_context_window_exceeded": "length"}


def stop_reason_for(finish_reason: str | None, *, has_tool_use: bool, stop_sequence: str | None) -> str:
    """Anthropic's stop_reason for an upstream finish_reason (unknown reasons end the turn)."""
    if has_tool_use and finish_reason in (None, "stop", "eos"):
        return "tool_use"  # some servers answer "stop" after calling tools
    if stop_sequence is not None and finish_reason in (None, "stop", "eos"):
        return "stop_sequence"
    return STOP_REASON_BY_FINISH.get(finish_reason or "stop", "end_turn")


def matched_stop_sequence(choice: Mapping[str, Any], text: str, stop_sequences: Sequence[str]) -> str | None:
    """The requested stop sequence the answer ended at, when it can be told (see module docstring)."""
    for key in ("stop_reason", "matched_stop"):
        named = choice.get(key)
        if isinstance(named, str) and named in stop_sequences:
            return named
    for sequence in stop_sequences:
        if sequence and text.endswith(sequence):
            return sequence
    return None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(int(value), 0)


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Chat completions usage in Anthropic's terms: cached prompt tokens are cache reads, the rest input.

    Cached tokens are read from `prompt_tokens_details.cached_tokens` (OpenAI), else
    `prompt_cache_hit_tokens` (DeepSeek), else a top-level `cached_tokens` (Moonshot).
    Chat completions never bill cache writes separately, so cache_creation_input_tokens is 0.
    """
    usage = usage or {}
    prompt = _count(usage.get("prompt_tokens"))
    cached = mapping_at(usage, "prompt_tokens_details").get("cached_tokens")
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens", usage.get("cached_tokens"))
    cached = min(_count(cached), prompt)
    return {"input_tokens": prompt - cached, "output_tokens": _count(usage.get("completion_tokens")),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def chat_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage in chat completions terms, the inverse of `anthropic_usage`: every prompt
    token (cache reads and writes included) is a prompt token, cache reads are its cached tokens."""
    usage = usage or {}
    cached = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + cached + _count(usage.get("cache_creation_input_tokens"))
    completion = _count(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def tool_input(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as a tool_use input. Arguments that are not a JSON object are kept, as
    text, under RAW_ARGUMENTS_KEY: the client sees what the model wrote instead of a failed request."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS_KEY: str(arguments)}


def _digest(*parts: str) -> str:
    return hashlib.blake2b(":".join(parts).encode(), digest_size=12).hexdigest()


def message_id_for(upstream_id: Any, fallback_seed: bytes = b"") -> str:
    """An Anthropic-form message id that keeps the upstream's id readable inside it."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"
    return "msg_" + hashlib.blake2b(fallback_seed, digest_size=12).hexdigest()


def tool_use_id_for(upstream_id: Any, *, message_id: str, position: int) -> str:
    """The upstream's tool-call id when it sent one, else one derived from the message and position."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id
    return "toolu_" + _digest(message_id, str(position))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def reasoning_text(message: Mapping[str, Any]) -> str:
    """Reasoning a server returned beside the answer: `reasoning_content` (DeepSeek, Qwen, Kimi) or
    `reasoning` (OpenRouter, vLLM)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def from_chat_response(response: Mapping[str, Any], *, model: str, provider: str,
                       stop_sequences: Sequence[str] = (), message_id: str | None = None) -> dict[str, Any]:
    """The Anthropic Message for a chat completion, carrying the router's `model` and `provider`."""
    choice: Mapping[str, Any] = next((c for c in list_at(response, "choices") if isinstance(c, Mapping)), {})
    message = mapping_at(choice, "message")
    msg_id = message_id or message_id_for(response.get("id"), orjson.dumps(response, option=orjson.OPT_SORT_KEYS,
                                                                           default=str))
    content: list[dict[str, Any]] = []
    thinking = reasoning_text(message)
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    text = _text_of(message.get("content"))
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = [c for c in list_at(message, "tool_calls") if isinstance(c, Mapping)]
    if not calls and isinstance(message.get("function_call"), Mapping):
        calls = [{"function": message["function_call"]}]  # the pre-tools form of one call
    for position, call in enumerate(calls):
        function = mapping_at(call, "function")
        content.append({"type": "tool_use", "id": tool_use_id_for(call.get("id"), message_id=msg_id, position=position),
                        "name": str(function.get("name", "")), "input": tool_input(function.get("arguments"))})
    finish = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
    stop_sequence = matched_stop_sequence(choice, text, stop_sequences) if finish in (None, "stop", "eos") else None
    stop_reason = "refusal" if refusal and not text else stop_reason_for(
        finish, has_tool_use=bool(calls), stop_sequence=stop_sequence)
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
            "content": content, "stop_reason": stop_reason,
            "stop_sequence": stop_sequence if stop_reason == "stop_sequence" else None,
            "usage": anthropic_usage(mapping_at(response, "usage"))}
