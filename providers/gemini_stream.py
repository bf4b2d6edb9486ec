"""Gemini `streamGenerateContent?alt=sse` → Anthropic stream events: one state machine per answer.

Google sends one `data: {GenerateContentResponse}` event per chunk (CRLF line ends), each chunk a
few more parts, the last with `finishReason`; every chunk repeats the usage so far. There is no end
marker: the body's end completes the answer, and an answer that ended without a finishReason was
cut short. The upstream bytes arrive cut anywhere; only whole lines are decoded. An error that
arrives after the status line comes as plain JSON lines (not `data:`), or as a `data:` event with
an `error` object: either ends the stream with an Anthropic `error` event.

Blocks follow the same rule as the JSON answer (gemini_response.BlockFolder), so a stream and the
answer it adds up to give the same message.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import Usage
from providers.gemini_errors import map_error
from providers.gemini_response import (
    FAILED_FINISH,
    BlockFolder,
    anthropic_usage,
    first_candidate,
    stop_reason_for,
)
from providers.openai_chat_errors import redact_secrets
from providers.openai_chat_request import list_at, mapping_at
from providers.sse import encode_event

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_CHARS_PER_TOKEN = 4  # the estimate used when a stream never reported its usage
_MAX_RAW = 64 * 1024  # plain lines kept while waiting for an error object to close


class GeminiStreamTranslator:
    """Feed it the upstream's bytes; it returns Anthropic SSE events, each as complete bytes."""

    def __init__(self, *, model: str, provider: str, message_id: str) -> None:
        self.model = model
        self.provider = provider
        self.message_id = message_id
        self.usage: dict[str, int] = anthropic_usage(None)
        self.stop_reason: str | None = None
        self.finished = False  # message_stop emitted
        self.failure: tuple[str, str] | None = None  # (type, message) of the error event emitted
        self._buffer = b""
        self._raw: list[bytes] = []  # plain (non-SSE) lines: an error body written mid-stream
        self._started = False
        self._ended = False
        self._folder = BlockFolder(message_id)
        self._finish_reason: str | None = None
        self._blocked = False
        self._usage_seen = False
        self._output_chars = 0

    # -- public ----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[bytes]:
        if self._ended:
            return []
        buffer = self._buffer + data if self._buffer else data
        end = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1:]
        events: list[bytes] = []
        for line in _LINE_BREAK.split(buffer[:end]):
            events += self._line(line)
            if self._ended:
                break
        return events

    def finish(self) -> list[bytes]:
        """The upstream body ended: the closing events, or an error event if the answer was cut short."""
        if self._ended:
            return []
        events = self._line(self._buffer) if self._buffer else []
        self._buffer = b""
        if self._ended:
            return events
        if self._raw:
            return events + self._fail("api_error", "the upstream sent a stream event that is not JSON")
        return events + self._complete()

    def error(self, message: str, error_type: str = "api_error") -> list[bytes]:
        """The error event for a broken upstream connection; nothing else is closed."""
        if self._ended:
            return []
        self._ended = True
        self.failure = (error_type, message)
        return [encode_event("error", {"type": "error", "error": {"type": error_type, "message": message}})]

    def close_usage(self) -> Usage:
        """Usage to account for; output estimated from the content seen when the upstream never counted it."""
        usage = Usage()
        usage.update_from(self.usage)
        if not self._usage_seen:
            usage.output_tokens = max(usage.output_tokens, math.ceil(self._output_chars / _CHARS_PER_TOKEN))
            usage.estimated = True
        return usage

    # -- lines and chunks ------------------------------------------------------------------------
    def _line(self, line: bytes) -> list[bytes]:
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            return self._payload(payload) if payload else []
        if not line.strip() or line.startswith((b":", b"event:", b"id:", b"retry:")):
            return []
        self._raw.append(line)  # a JSON error body, line by line: decodable once it is whole
        if sum(len(r) for r in self._raw) > _MAX_RAW:
            return self._fail("api_error", "the upstream sent a stream event that is not JSON")
        try:
            parsed = orjson.loads(b"\n".join(self._raw))
        except orjson.JSONDecodeError:
            return []
        self._raw.clear()
        return self._object(parsed)

    def _payload(self, payload: bytes) -> list[bytes]:
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._fail("api_error", "the upstream sent a stream event that is not JSON")
        return self._object(parsed)

    def _object(self, parsed: Any) -> list[bytes]:
        if isinstance(parsed, list) and parsed:
            parsed = parsed[0]
        if not isinstance(parsed, Mapping):
            return []
        error = parsed.get("error")
        if isinstance(error, Mapping):
            code = error.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
            _, error_type, message = map_error(status, orjson.dumps({"error": dict(error)}))
            return self._fail(error_type, message)
        return self._chunk(parsed)

    def _chunk(self, chunk: Mapping[str, Any]) -> list[bytes]:
        if isinstance(chunk.get("usageMetadata"), Mapping):
            self.usage = anthropic_usage(chunk["usageMetadata"])
            self._usage_seen = "candidatesTokenCount" in chunk["usageMetadata"]  # chunks before the last may
            # count the prompt only
        events = [] if self._started else [self._message_start()]
        self._started = True
        if mapping_at(chunk, "promptFeedback").get("blockReason"):
            self._blocked = True
        candidate = first_candidate(chunk)
        for part in list_at(mapping_at(candidate, "content"), "parts"):
            if isinstance(part, Mapping):
                events += [self._event(op) for op in self._folder.part(part)]
        finish = candidate.get("finishReason")
        if isinstance(finish, str) and finish:
            self._finish_reason = finish
        return events

    def _event(self, op: tuple) -> bytes:
        if op[0] == "start":
            return encode_event("content_block_start",
                                {"type": "content_block_start", "index": op[1], "content_block": op[2]})
        if op[0] == "stop":
            return encode_event("content_block_stop", {"type": "content_block_stop", "index": op[1]})
        delta = op[2]
        self._output_chars += len(delta.get("text") or delta.get("thinking") or delta.get("partial_json") or "")
        return encode_event("content_block_delta", {"type": "content_block_delta", "index": op[1], "delta": delta})

    # -- the end ---------------------------------------------------------------------------------
    def _message_start(self) -> bytes:
        usage = {**self.usage, "output_tokens": 0}
        return encode_event("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
            "provider": self.provider, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})

    def _complete(self) -> list[bytes]:
        if self._finish_reason in FAILED_FINISH:
            return self._fail(FAILED_FINISH[self._finish_reason][1], FAILED_FINISH[self._finish_reason][2])
        if self._finish_reason is None and not self._blocked:
            return self._fail("api_error", "the upstream stream ended before the answer was complete")
        events = [] if self._started else [self._message_start()]
        events += [self._event(op) for op in self._folder.close()]
        self.stop_reason = "refusal" if self._finish_reason is None else stop_reason_for(
            self._finish_reason, has_tool_use=self._folder.tool_uses > 0)
        events.append(encode_event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": dict(self.usage)}))
        events.append(encode_event("message_stop", {"type": "message_stop"}))
        self._ended = True
        self.finished = True
        return events

    def _fail(self, error_type: str, message: str) -> list[bytes]:
        events = [self._event(op) for op in self._folder.close()]
        return events + self.error(redact_secrets(message), error_type)
