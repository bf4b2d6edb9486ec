"""Responses API stream events (SSE) → Anthropic stream events: one state machine per answer.

The upstream body arrives as bytes cut anywhere; only complete events (ending in a blank line) are
decoded, each one JSON object whose `type` names it. The translator emits message_start on the first
event, then the blocks of openai_responses_response's rules as their deltas arrive: a thinking block
per reasoning item (summary deltas, a blank line between summary parts, and a signature_delta
carrying the encrypted item when `response.output_item.done` delivers it), a text block per output
text or refusal part, a tool_use block per function call (opened by `response.output_item.added`,
which names it). A `.done` event whose full text extends what the deltas carried emits the rest, so
an upstream that skips deltas loses nothing. `response.completed` / `response.incomplete` end the
message with its stop reason and usage; `response.failed`, an `error` event, undecodable data or a
body that ends before the response did end it with an Anthropic `error` event.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.anthropic_events import AnswerStream
from providers.anthropic_input import mapping_at
from providers.openai_chat_response import tool_use_id_for
from providers.openai_responses_errors import error_of_object
from providers.openai_responses_response import (
    SUMMARY_SEPARATOR,
    anthropic_usage,
    reasoning_signature,
    stop_reason_for,
)
from providers.sse import EventSplitter, encode_event, event_data



@dataclass
class _Block:
    index: int  # Anthropic block index
    kind: str  # thinking, text or tool
    emitted: dict[Any, str] = field(default_factory=dict)  # upstream part → text sent so far
    has_text: bool = False


class ResponsesStreamTranslator(AnswerStream):
    """Feed it the upstream's bytes; it returns Anthropic SSE events, each as complete bytes."""

    def __init__(self, *, model: str, provider: str, message_id: str) -> None:
        super().__init__(model=model, provider=provider, message_id=message_id, usage=anthropic_usage(None))
        self._splitter = EventSplitter()
        self._held_cr = b""
        self._started = False
        self._open: _Block | None = None
        self._blocks: dict[tuple[str, int, int], _Block] = {}  # (kind, output_index, content_index)
        self._next_index = 0
        self._calls = 0
        self._text_kinds: set[str] = set()

    # -- public ----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[bytes]:
        if self._ended or not data:
            return []
        # A CRLF cut between two chunks must reach the splitter whole, which only joins CRLFs it sees.
        data = self._held_cr + data
        self._held_cr = b"\r" if data.endswith(b"\r") else b""
        return self._events(self._splitter.feed(data[:-1] if self._held_cr else data))

    def finish(self) -> list[bytes]:
        """The upstream body ended: an unterminated last event is read, then the answer must be over."""
        if self._ended:
            return []
        events = self._events(self._splitter.feed(self._held_cr + b"\n\n"))
        if not self._ended:
            events += self._fail("api_error", "the upstream stream ended before the response was complete")
        return events

    # -- events ----------------------------------------------------------------------------------
    def _events(self, block: bytes) -> list[bytes]:
        out: list[bytes] = []
        for raw in block.split(b"\n\n"):
            data = event_data(raw)
            if not data:
                continue  # blank, comment, or an event with no data
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                return out + self._fail("api_error", "the upstream sent a stream event that is not JSON")
            if isinstance(event, Mapping):
                out += self._event(event)
            if self._ended:
                break
        return out

    def _event(self, event: Mapping[str, Any]) -> list[bytes]:
        out = [] if self._started else [self._message_start()]
        self._started = True
        kind = event.get("type")
        where = _int(event.get("output_index"))
        if kind == "response.output_item.added":
            return out + self._item_added(where, mapping_at(event, "item"))
        if kind == "response.output_item.done":
            return out + self._item_done(where, mapping_at(event, "item"))
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            part = "refusal" if kind == "response.refusal.delta" else "output_text"
            return out + self._text(where, _int(event.get("content_index")), part, event.get("delta"))
        if kind == "response.output_text.done":
            return out + self._text(where, _int(event.get("content_index")), "output_text", event.get("text"), True)
        if kind == "response.refusal.done":
            return out + self._text(where, _int(event.get("content_index")), "refusal", event.get("refusal"), True)
        if kind == "response.content_part.done":
            return out + self._close("text", where, _int(event.get("content_index")))
        if kind == "response.reasoning_summary_text.delta":
            return out + self._thinking(where, ("summary", _int(event.get("summary_index"))), event.get("delta"))
        if kind == "response.reasoning_summary_text.done":
            return out + self._thinking(where, ("summary", _int(event.get("summary_index"))), event.get("text"), True)
        if kind == "response.reasoning_text.delta":
            return out + self._thinking(where, ("content", _int(event.get("content_index"))), event.get("delta"))
        if kind == "response.reasoning_text.done":
            return out + self._thinking(where, ("content", _int(event.get("content_index"))), event.get("text"), True)
        if kind == "response.function_call_arguments.delta":
            return out + self._arguments(where, event.get("delta"))
        if kind == "response.function_call_arguments.done":
            return out + self._arguments(where, event.get("arguments"), done=True)
        if kind in ("response.completed", "response.incomplete"):
            return out + self._complete(mapping_at(event, "response"))
        if kind == "response.failed":
            error = mapping_at(mapping_at(event, "response"), "error")
            _, error_type, message = error_of_object(error or {"message": "the upstream response failed"})
            return out + self._fail(error_type, message)
        if kind == "error":  # the reference's flat form, or the error object nested as in other OpenAI streams
            _, error_type, message = error_of_object(mapping_at(event, "error") or event)
            return out + self._fail(error_type, message)
        return out  # created, in_progress, part added, annotations, built-in tool progress...

    # -- items -----------------------------------------------------------------------------------
    def _item_added(self, where: int, item: Mapping[str, Any]) -> list[bytes]:
        if item.get("type") != "function_call":
            return []  # reasoning and text blocks open with their first text
        tool_id = tool_use_id_for(item.get("call_id"), message_id=self.message_id, position=self._calls)
        self._calls += 1
        out = self._start(("tool", where, 0), "tool",
                          {"type": "tool_use", "id": tool_id, "name": str(item.get("name", "")), "input": {}})
        arguments = item.get("arguments")
        return out + (self._arguments(where, arguments) if isinstance(arguments, str) and arguments else [])

    def _item_done(self, where: int, item: Mapping[str, Any]) -> list[bytes]:
        kind = item.get("type")
        out: list[bytes] = []
        if kind == "function_call":
            if ("tool", where, 0) not in self._blocks:
                out += self._item_added(where, item)
            else:
                out += self._arguments(where, item.get("arguments"), done=True)
            return out + self._close("tool", where, 0)
        if kind == "reasoning":
            signature = reasoning_signature(item)
            key = ("thinking", where, 0)
            if signature:
                if key not in self._blocks:
                    out += self._start(key, "thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta(self._blocks[key], {"type": "signature_delta", "signature": signature}))
            return out + self._close("thinking", where, 0)
        if kind == "message":
            return out + [e for key in [k for k in self._blocks if k[0] == "text" and k[1] == where]
                          for e in self._close(*key)]
        return out

    def _text(self, where: int, part: int, kind: str, text: Any, done: bool = False) -> list[bytes]:
        key = ("text", where, part)
        block = self._blocks.get(key)
        piece = self._new_text(block, None, text, done)
        if not piece:
            return []
        self._text_kinds.add(kind)
        out: list[bytes] = []
        if block is None:
            out += self._start(key, "text", {"type": "text", "text": ""})
            block = self._blocks[key]
        block.emitted[None] = block.emitted.get(None, "") + piece
        return out + [self._delta(block, {"type": "text_delta", "text": piece})]

    def _thinking(self, where: int, part: tuple[str, int], text: Any, done: bool = False) -> list[bytes]:
        key = ("thinking", where, 0)
        block = self._blocks.get(key)
        piece = self._new_text(block, part, text, done)
        if not piece:
            return []
        out: list[bytes] = []
        if block is None:
            out += self._start(key, "thinking", {"type": "thinking", "thinking": "", "signature": ""})
            block = self._blocks[key]
        sent = piece
        if part not in block.emitted and block.has_text:
            sent = SUMMARY_SEPARATOR + piece  # a new summary part, as the JSON answer joins them
        block.emitted[part] = block.emitted.get(part, "") + piece
        return out + [self._delta(block, {"type": "thinking_delta", "thinking": sent})]

    def _arguments(self, where: int, text: Any, done: bool = False) -> list[bytes]:
        block = self._blocks.get(("tool", where, 0))
        if block is None:
            return []  # arguments of a call never announced: no name to give the block
        piece = self._new_text(block, None, text, done)
        if not piece:
            return []
        block.emitted[None] = block.emitted.get(None, "") + piece
        return [self._delta(block, {"type": "input_json_delta", "partial_json": piece})]

    @staticmethod
    def _new_text(block: _Block | None, part: Any, text: Any, done: bool) -> str:
        """What `text` adds: all of a delta; of a `.done` event's full text, what the deltas lacked."""
        if not isinstance(text, str) or not text:
            return ""
        if not done:
            return text
        sent = block.emitted.get(part, "") if block is not None else ""
        return text[len(sent):] if text.startswith(sent) else ""

    # -- blocks ----------------------------------------------------------------------------------
    def _start(self, key: tuple[str, int, int], kind: str, content_block: dict[str, Any]) -> list[bytes]:
        out = self._close_open()
        block = _Block(index=self._next_index, kind=kind)
        self._next_index += 1
        self._blocks[key] = block
        self._open = block
        out.append(encode_event("content_block_start", {"type": "content_block_start", "index": block.index,
                                                        "content_block": content_block}))
        return out

    def _delta(self, block: _Block, delta: dict[str, Any]) -> bytes:
        text = delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""
        block.has_text = block.has_text or bool(text)
        return encode_event("content_block_delta", {"type": "content_block_delta", "index": block.index,
                                                    "delta": delta})

    def _close(self, kind: str, where: int, part: int) -> list[bytes]:
        block = self._blocks.get((kind, where, part))
        return self._close_open() if block is not None and block is self._open else []

    def _close_open(self) -> list[bytes]:
        if self._open is None:
            return []
        index = self._open.index
        self._open = None
        return [encode_event("content_block_stop", {"type": "content_block_stop", "index": index})]

    # -- the end ---------------------------------------------------------------------------------
    def _complete(self, response: Mapping[str, Any]) -> list[bytes]:
        out = self._close_open()
        if isinstance(response.get("usage"), Mapping):
            self.usage = anthropic_usage(response["usage"])
            self._usage_seen = True
        self.stop_reason = stop_reason_for(response, has_tool_use=self._calls > 0,
                                           refusal_only=self._text_kinds == {"refusal"})
        return out + self._message_end()

    def _fail(self, error_type: str, message: str) -> list[bytes]:
        return self._close_open() + self.error(message, error_type)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
