"""Gemini `GenerateContentResponse` → Anthropic Message, and the pieces a stream shares with it.

Parts become blocks by one rule, used by the JSON answer and the stream alike (`BlockFolder`):
a run of thought parts is one thinking block, a run of text parts one text block, each
functionCall its own tool_use block. A thought part's thoughtSignature ends its thinking block
(as `signature`); a functionCall's signature goes in its tool_use id (see gemini_request). The
ids are derived from the message id and the call's position, so a re-sent answer keeps them.

finishReason: STOP → end_turn (tool_use when calls were made), MAX_TOKENS → max_tokens, the
safety and policy stops → refusal; a malformed or unexpected function call, a malformed response
or too many tool calls are the upstream's failure (`error_in_response`); Gemini's refusal of a
history without its signatures is the request's (400). A prompt blocked by `promptFeedback` is an
empty refusal.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from providers.gemini_errors import map_error
from providers.gemini_request import thinking_signature, tool_use_id
from providers.openai_chat_errors import redact_secrets
from providers.anthropic_input import list_at, mapping_at

STOP_REASON_BY_FINISH = {
    "STOP": "end_turn", "MAX_TOKENS": "max_tokens", "CONTINUATION": "max_tokens",
    **dict.fromkeys(("SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "LANGUAGE", "IMAGE_SAFETY",
                     "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"), "refusal")}
# finishReasons that mean no usable answer: (client status, Anthropic error type, message).
FAILED_FINISH = {
    "MALFORMED_FUNCTION_CALL": (502, "api_error", "the model produced a malformed function call"),
    "UNEXPECTED_TOOL_CALL": (502, "api_error", "the model called a function that was not declared"),
    "TOO_MANY_TOOL_CALLS": (502, "api_error", "the model made too many tool calls"),
    "MALFORMED_RESPONSE": (502, "api_error", "the upstream produced a malformed response"),
    "MISSING_THOUGHT_SIGNATURE": (400, "invalid_request_error",
                                  "the conversation's function calls lack the thought signatures Gemini issued"),
}


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(int(value), 0)


def anthropic_usage(usage_metadata: Mapping[str, Any] | None) -> dict[str, int]:
    """`usageMetadata` in Anthropic's terms: cached prompt tokens are cache reads, the rest of the prompt
    (tool-use prompt tokens included) input; output is the candidates plus the thoughts."""
    meta = usage_metadata or {}
    prompt = _count(meta.get("promptTokenCount")) + _count(meta.get("toolUsePromptTokenCount"))
    cached = min(_count(meta.get("cachedContentTokenCount")), prompt)
    return {"input_tokens": prompt - cached,
            "output_tokens": _count(meta.get("candidatesTokenCount")) + _count(meta.get("thoughtsTokenCount")),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def stop_reason_for(finish_reason: str | None, *, has_tool_use: bool) -> str:
    if has_tool_use and finish_reason in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
        return "tool_use"
    return STOP_REASON_BY_FINISH.get(finish_reason or "STOP", "end_turn")


def first_candidate(response: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((c for c in list_at(response, "candidates") if isinstance(c, Mapping) and c.get("index", 0) == 0), {})


def message_id_for(response_id: Any, fallback_seed: bytes = b"") -> str:
    if isinstance(response_id, str) and response_id:
        return f"msg_{response_id}"
    return "msg_" + hashlib.blake2b(fallback_seed, digest_size=12).hexdigest()


def error_in_response(response: Mapping[str, Any]) -> tuple[int, str, str] | None:
    """The failure a 200 answer stands for (an error object, or a finishReason that left no usable
    answer) as (client status, Anthropic error type, message), else None."""
    error = response.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 502
        return map_error(status, orjson.dumps({"error": dict(error)}))
    if not first_candidate(response) and not mapping_at(response, "promptFeedback").get("blockReason"):
        return 502, "api_error", "the upstream answered without a candidate"
    finish = first_candidate(response).get("finishReason")
    if finish in FAILED_FINISH:
        status, error_type, message = FAILED_FINISH[finish]
        detail = first_candidate(response).get("finishMessage")
        return status, error_type, redact_secrets(f"{message}: {detail}" if isinstance(detail, str) else message)
    return None


class BlockFolder:
    """Turns Gemini parts, in order, into Anthropic block operations:
    ("start", index, content_block), ("delta", index, delta), ("stop", index)."""

    __slots__ = ("message_id", "_open", "_next", "_calls")

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self._open: tuple[str, int] | None = None  # (kind, index) of the open block
        self._next = 0
        self._calls = 0

    @property
    def tool_uses(self) -> int:
        return self._calls

    def part(self, part: Mapping[str, Any]) -> list[tuple]:
        text = part.get("text") if isinstance(part.get("text"), str) else None
        signature = part.get("thoughtSignature") if isinstance(part.get("thoughtSignature"), str) else None
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            return self._call(call, signature)
        if part.get("thought") is True:
            ops = self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""}) \
                if text or signature else []
            if text:
                ops.append(("delta", self._next - 1, {"type": "thinking_delta", "thinking": text}))
            if signature:
                ops.append(("delta", self._next - 1,
                            {"type": "signature_delta", "signature": thinking_signature(signature)}))
                ops += self.close()  # a signature seals its thoughts: later ones are a new block
            return ops
        if text:
            ops = self._ensure("text", {"type": "text", "text": ""})
            ops.append(("delta", self._next - 1, {"type": "text_delta", "text": text}))
            return ops
        return []  # empty text (a signature only), inline data, executable code: nothing Anthropic shows

    def close(self) -> list[tuple]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [("stop", index)]

    def _ensure(self, kind: str, block: dict[str, Any]) -> list[tuple]:
        if self._open is not None and self._open[0] == kind:
            return []
        ops = self.close()
        self._open = (kind, self._next)
        ops.append(("start", self._next, block))
        self._next += 1
        return ops

    def _call(self, call: Mapping[str, Any], signature: str | None) -> list[tuple]:
        digest = hashlib.blake2b(f"{self.message_id}:{self._calls}".encode(), digest_size=12).hexdigest()
        self._calls += 1
        args = call.get("args") if isinstance(call.get("args"), Mapping) else {}
        ops = self.close()
        index = self._next
        self._next += 1
        block = {"type": "tool_use", "id": tool_use_id(digest, signature), "name": str(call.get("name", "")),
                 "input": {}}
        ops.append(("start", index, block))
        ops.append(("delta", index, {"type": "input_json_delta", "partial_json": orjson.dumps(dict(args)).decode()}))
        ops.append(("stop", index))
        return ops


def apply(content: list[dict[str, Any]], op: tuple) -> None:
    """Apply one block operation to a message's content, as a client accumulating a stream would."""
    if op[0] == "start":
        content.append(dict(op[2]))
    elif op[0] == "delta":
        block, delta = content[op[1]], op[2]
        if delta["type"] == "text_delta":
            block["text"] += delta["text"]
        elif delta["type"] == "thinking_delta":
            block["thinking"] += delta["thinking"]
        elif delta["type"] == "signature_delta":
            block["signature"] = delta["signature"]
        elif delta["type"] == "input_json_delta":
            block["input"] = orjson.loads(delta["partial_json"])


def from_gemini_response(response: Mapping[str, Any], *, model: str, provider: str,
                         message_id: str | None = None) -> dict[str, Any]:
    """The Anthropic Message for a GenerateContentResponse, carrying the router's `model` and `provider`.
    Check `error_in_response` first: a failed answer has no message."""
    msg_id = message_id or message_id_for(response.get("responseId"),
                                          orjson.dumps(response, option=orjson.OPT_SORT_KEYS, default=str))
    candidate = first_candidate(response)
    folder = BlockFolder(msg_id)
    content: list[dict[str, Any]] = []
    for part in list_at(mapping_at(candidate, "content"), "parts"):
        if isinstance(part, Mapping):
            for op in folder.part(part):
                apply(content, op)
    finish = candidate.get("finishReason") if isinstance(candidate.get("finishReason"), str) else None
    if not candidate and mapping_at(response, "promptFeedback").get("blockReason"):
        stop_reason = "refusal"
    else:
        stop_reason = stop_reason_for(finish, has_tool_use=folder.tool_uses > 0)
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "provider": provider,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": anthropic_usage(mapping_at(response, "usageMetadata"))}
