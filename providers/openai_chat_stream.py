"""OpenAI chat completion chunks (SSE) → Anthropic stream events: one state machine per answer.

The upstream body arrives as bytes cut anywhere; only whole lines are decoded (a newline byte never
occurs inside a UTF-8 character), and each `data:` line is one chunk, which also copes with servers
that omit the blank line between events. The translator emits message_start on the first chunk,
then one content block per run of reasoning (thinking), text or one tool call, a block closing when
another starts, and message_delta + message_stop at `[DONE]` or end of body.

Tool calls are expected one after another, as every known server sends them. A fragment for a call
whose block is already closed is still emitted on that call's block index, so accumulating clients
(the SDKs) rebuild its arguments whole.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.anthropic_events import AnswerStream
from providers.openai_chat_errors import error_type_of_object, redact_secrets
from providers.anthropic_input import list_at, mapping_at
from providers.openai_chat_response import (
    anthropic_usage,
    matched_stop_sequence,
    reasoning_text,
    stop_reason_for,
    tool_use_id_for,
)
from providers.sse import encode_event

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


@dataclass
class _ToolCall:
    id: str | None = None
    name: str | None = None
    block: int | None = None  # Anthropic block index, once started
    pending: list[str] = field(default_factory=list)  # argument fragments that came before the name


class ChatStreamTranslator(AnswerStream):
    """Feed it the upstream's bytes; it returns Anthropic SSE events, each as complete bytes."""

    def __init__(self, *, model: str, provider: str, message_id: str, stop_sequences: Sequence[str] = ()) -> None:
        super().__init__(model=model, provider=provider, message_id=message_id, usage=anthropic_usage(None))
        self.stop_sequences = tuple(s for s in stop_sequences if s)
        self.stop_sequence: str | None = None
        self._buffer = b""
        self._started = False
        self._open: tuple[str, int] | None = None  # (kind, Anthropic index) of the open block
        self._next_index = 0
        self._tools: dict[int, _ToolCall] = {}
        self._finish_reason: str | None = None
        self._upstream_stop: str | None = None
        self._text_tail = ""
        self._tail_length = max((len(s) for s in self.stop_sequences), default=0)
        self._text_kinds: set[str] = set()  # "content" and/or "refusal": which kinds of text came

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
        return events + self._complete()

    # -- lines and chunks ------------------------------------------------------------------------
    def _line(self, line: bytes) -> list[bytes]:
        if not line.startswith(b"data:"):
            return []  # blank lines, `: keep-alive` comments, event:/id:/retry: fields
        payload = line[5:].strip()
        if not payload:
            return []
        if payload == b"[DONE]":
            return self._complete()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._fail("api_error", "the upstream sent a stream event that is not JSON")
        if not isinstance(chunk, Mapping):
            return []
        if chunk.get("error"):
            error = chunk["error"]
            error = error if isinstance(error, Mapping) else {"message": str(error)}
            message = redact_secrets(str(error.get("message") or "the upstream reported an error mid-stream"))
            return self._fail(error_type_of_object(error), message)
        return self._chunk(chunk)

    def _chunk(self, chunk: Mapping[str, Any]) -> list[bytes]:
        events = [] if self._started else [self._message_start(chunk)]
        self._started = True
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = anthropic_usage(chunk["usage"])
            self._usage_seen = True
        choice = next((c for c in list_at(chunk, "choices") if isinstance(c, Mapping) and c.get("index", 0) == 0), None)
        if choice is None:
            return events
        delta = mapping_at(choice, "delta")
        reasoning = reasoning_text(delta)
        if reasoning:
            events += self._append("thinking", reasoning)
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str) and delta[key]:
                self._text_kinds.add(key)
                events += self._append("text", delta[key])
        for call in list_at(delta, "tool_calls"):
            if isinstance(call, Mapping):
                events += self._tool_fragment(call)
        finish = choice.get("finish_reason")
        if finish == "error":  # OpenRouter's end of a failed stream, when no error object came with it
            return events + self._fail("api_error", "the upstream reported an error mid-stream")
        if isinstance(finish, str) and finish:
            self._finish_reason = finish
            for key in ("stop_reason", "matched_stop"):
                if isinstance(choice.get(key), str):
                    self._upstream_stop = choice[key]
            events += self._close_block()
        return events

    # -- blocks ----------------------------------------------------------------------------------
    def _open_block(self, kind: str, content_block: dict[str, Any]) -> list[bytes]:
        events = self._close_block()
        index = self._next_index
        self._next_index += 1
        self._open = (kind, index)
        events.append(encode_event("content_block_start",
                                   {"type": "content_block_start", "index": index, "content_block": content_block}))
        return events

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [encode_event("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _append(self, kind: str, text: str) -> list[bytes]:
        events: list[bytes] = []
        if self._open is None or self._open[0] != kind:
            block = ({"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking"
                     else {"type": "text", "text": ""})
            events += self._open_block(kind, block)
        index = self._next_index - 1  # the open block is always the newest
        if kind == "text":
            delta = {"type": "text_delta", "text": text}
            if self._tail_length:
                self._text_tail = (self._text_tail + text)[-self._tail_length:]
        else:
            delta = {"type": "thinking_delta", "thinking": text}
        events.append(encode_event("content_block_delta",
                                   {"type": "content_block_delta", "index": index, "delta": delta}))
        return events

    def _tool_key(self, call: Mapping[str, Any]) -> int:
        if isinstance(call.get("index"), int):
            return call["index"]
        # Servers that omit `index` send each call whole: a new id is a new call.
        upstream_id = call.get("id")
        for key, state in self._tools.items():
            if upstream_id and state.id == upstream_id:
                return key
        if upstream_id or not self._tools:
            return len(self._tools)
        return max(self._tools)

    def _tool_fragment(self, call: Mapping[str, Any]) -> list[bytes]:
        key = self._tool_key(call)
        state = self._tools.setdefault(key, _ToolCall())
        if isinstance(call.get("id"), str) and call["id"] and state.id is None:
            state.id = call["id"]
        function = mapping_at(call, "function")
        if isinstance(function.get("name"), str) and function["name"] and state.block is None:
            state.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):  # a few servers send the arguments already parsed
            arguments = orjson.dumps(arguments).decode()
        fragments = [arguments] if isinstance(arguments, str) and arguments else []
        events: list[bytes] = []
        if state.block is None:
            if state.name is None:
                state.pending += fragments
                return events
            tool_id = tool_use_id_for(state.id, message_id=self.message_id, position=key)
            events += self._open_block("tool", {"type": "tool_use", "id": tool_id, "name": state.name, "input": {}})
            state.block = self._next_index - 1
            fragments = state.pending + fragments
            state.pending = []
        for fragment in fragments:
            events.append(encode_event("content_block_delta", {
                "type": "content_block_delta", "index": state.block,
                "delta": {"type": "input_json_delta", "partial_json": fragment}}))
        return events

    # -- the end ---------------------------------------------------------------------------------
    def _message_start(self, chunk: Mapping[str, Any]) -> bytes:
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = anthropic_usage(chunk["usage"])
        return super()._message_start()

    def _complete(self) -> list[bytes]:
        if self._ended:
            return []
        if self._finish_reason is None:
            return self._fail("api_error", "the upstream stream ended before the answer was complete")
        events = self._close_block()
        has_tool_use = any(state.block is not None for state in self._tools.values())
        choice = {"stop_reason": self._upstream_stop} if self._upstream_stop is not None else {}
        stop_sequence = matched_stop_sequence(choice, self._text_tail, self.stop_sequences)
        if self._text_kinds == {"refusal"}:
            self.stop_reason = "refusal"
        else:
            self.stop_reason = stop_reason_for(self._finish_reason, has_tool_use=has_tool_use,
                                               stop_sequence=stop_sequence)
        self.stop_sequence = stop_sequence if self.stop_reason == "stop_sequence" else None
        return events + self._message_end(self.stop_sequence)

    def _fail(self, error_type: str, message: str) -> list[bytes]:
        events = self._close_block()
        return events + self.error(message, error_type)
