"""A fake Anthropic Messages API upstream, byte for byte as the real one answers.

Unscripted requests get a default answer: JSON or SSE depending on the body's `stream`, with exactly
`max_tokens` output tokens (capped at `AUTO_MAX_OUTPUT`) and `input_tokens` = `AUTO_INPUT_TOKENS`, so
that tests can compute costs and budgets exactly.
"""
from __future__ import annotations

import json

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer

AUTO_INPUT_TOKENS = 10
AUTO_MAX_OUTPUT = 400
UPSTREAM_MODEL = "claude-sonnet-4-5-20250929"


def event(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def message_body(text: str = "Hello from the fake.", *, model: str = UPSTREAM_MODEL, input_tokens: int = 10,
                 output_tokens: int = 5, cache_read: int = 0, cache_write: int = 0, stop_reason: str = "end_turn",
                 msg_id: str = "msg_fake0001", content: list | None = None) -> dict:
    return {
        "id": msg_id, "type": "message", "role": "assistant", "model": model,
        "content": content if content is not None else [{"type": "text", "text": text}],
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "output_tokens": output_tokens,
                  "service_tier": "standard"},
    }


def stream_events(pieces: list[str], *, model: str = UPSTREAM_MODEL, input_tokens: int = 10,
                  output_tokens: int | None = None, cache_read: int = 0, cache_write: int = 0,
                  stop_reason: str = "end_turn", msg_id: str = "msg_fake0001", pings: int = 1) -> list[bytes]:
    """The exact event sequence of a streamed text answer."""
    events = [
        event("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_write,
                      "cache_read_input_tokens": cache_read, "output_tokens": 1, "service_tier": "standard"}}}),
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
    ]
    events += [event("ping", {"type": "ping"})] * pings
    for piece in pieces:
        events.append(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": piece}}))
    events += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                "usage": {"output_tokens": output_tokens if output_tokens is not None else len(pieces)}}),
        event("message_stop", {"type": "message_stop"}),
    ]
    return events


def json_reply(body: dict, status: int = 200, headers: dict | None = None) -> Reply:
    return Reply(status=status, headers=headers or {}, chunks=[json.dumps(body).encode()])


def sse_reply(events: list[bytes], **kwargs) -> Reply:
    return Reply(content_type="text/event-stream", chunks=events, **kwargs)


def error_reply(status: int, error_type: str, message: str, headers: dict | None = None) -> Reply:
    return json_reply({"type": "error", "error": {"type": error_type, "message": message}}, status, headers)


class AnthropicFake(ScriptedServer):
    def auto_reply(self, request: RecordedRequest) -> Reply:
        if request.path.endswith("/count_tokens"):
            return json_reply({"input_tokens": AUTO_INPUT_TOKENS})
        body = request.json()
        output = min(int(body.get("max_tokens", 16)), AUTO_MAX_OUTPUT)
        model = body.get("model", UPSTREAM_MODEL)
        if body.get("stream"):
            return sse_reply(stream_events(["tok "] * output, model=model, input_tokens=AUTO_INPUT_TOKENS,
                                           output_tokens=output))
        return json_reply(message_body("tok " * output, model=model, input_tokens=AUTO_INPUT_TOKENS,
                                       output_tokens=output))
