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

from collections.abc import Mapping
from typing import Any

import orjson

from providers.anthropic_events import AnswerStream
from providers.gemini_errors import map_error
from providers.gemini_response import (
    FAILED_FINISH,
    BlockFolder,
    anthropic_usage,
    first_candidate,
    stop_reason_for,
)
from providers.openai_chat_errors import redact_secrets
from providers.anthropic_input import list_at, mapping_at
from providers.sse import encode_event

_MAX_RAW = 64 * 1024  # plain lines kept while waiting for an error object to close


class GeminiStreamTranslator(AnswerStream):
    """Feed it the upstream's bytes; it returns Anthropic SSE events, each as complete bytes."""

    def __init__(self, *, model: str, provider: str, message_id: str) -> None:
        super().__init__(model=model, provider=provider, message_id=message_id, usage=anthropic_usage(None))
        self._buffer = b""
        self._raw: list[bytes] = []  # plain (non-SSE) lines: an error body written mid-stream
        self._started = False
        self._folder = BlockFolder(message_id)
        self._finish_reason: str | None = None
        self._blocked = False

    # -- public ----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[bytes]:
        if self._ended:
            return []
        lines = (self._buffer + data).split(b"\n")  # Google ends lines in CRLF: each CR goes in _lines
        self._buffer = lines.pop()
        return self._lines(lines)

    def finish(self) -> list[bytes]:
        """The upstream body ended: the closing events, or an error event if the answer was cut short."""
        if self._ended:
            return []
        rest, self._buffer = self._buffer, b""
        events = self._lines([rest])
        if self._ended:
            return events
        if self._raw:
            return events + self._fail("api_error", "the upstream sent a stream event that is not JSON")
        return events + self._complete()

    # -- lines and chunks ------------------------------------------------------------------------
    def _lines(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        for line in lines:
            if self._ended:
                break
            events += self._line(line.rstrip(b"\r"))
        return events

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
        return encode_event("content_block_delta", {"type": "content_block_delta", "index": op[1], "delta": delta})

    # -- the end ---------------------------------------------------------------------------------
    def _complete(self) -> list[bytes]:
        if self._finish_reason in FAILED_FINISH:
            return self._fail(FAILED_FINISH[self._finish_reason][1], FAILED_FINISH[self._finish_reason][2])
        if self._finish_reason is None and not self._blocked:
            return self._fail("api_error", "the upstream stream ended before the answer was complete")
        events = [] if self._started else [self._message_start()]
        events += [self._event(op) for op in self._folder.close()]
        self.stop_reason = "refusal" if self._finish_reason is None else stop_reason_for(
            self._finish_reason, has_tool_use=self._folder.tool_uses > 0)
        return events + self._message_end()

    def _fail(self, error_type: str, message: str) -> list[bytes]:
        events = [self._event(op) for op in self._folder.close()]
        return events + self.error(redact_secrets(message), error_type)
