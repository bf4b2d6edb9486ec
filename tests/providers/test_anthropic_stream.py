"""Scanning an Anthropic event stream: bytes pass unchanged except `message_start`, usage is read,
and how the stream is cut into chunks changes nothing."""
from __future__ import annotations

import orjson
from hypothesis import given, settings, strategies as st

from providers.anthropic import StreamScanner


def event(name: str, payload: dict, *, name_first: bool = True, space: bool = True) -> bytes:
    name_line = b"event:" + (b" " if space else b"") + name.encode()
    data_line = b"data: " + orjson.dumps(payload)
    lines = [name_line, data_line] if name_first else [data_line, name_line]
    return b"\n".join(lines) + b"\n\n"


START = event("message_start", {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-upstream", "content": [],
    "usage": {"input_tokens": 120, "cache_read_input_tokens": 30, "output_tokens": 1}}})
TAIL = [
    event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                            "usage": {"output_tokens": 42}}, name_first=False),
    event("message_stop", {"type": "message_stop"}, space=False),
]


def stream(texts: list[str]) -> list[bytes]:
    deltas = [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": t}}) for t in texts]
    ping = event("ping", {"type": "ping"})
    block_start = event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
    return [START, block_start, ping, *deltas, *TAIL]


def scan(chunks: list[bytes]) -> tuple[StreamScanner, bytes]:
    scanner = StreamScanner(model="router/model", provider="anthropic")
    return scanner, b"".join(scanner.feed(chunk) for chunk in chunks)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def test_only_message_start_changes_and_usage_is_read():
    events = stream(["Hello", " there", ' "event: message_stop"\n'])
    scanner, out = scan([b"".join(events)])
    rewritten_start, rest = out.split(b"\n\n", 1)
    assert rest == b"".join(events[1:])
    message = orjson.loads(rewritten_start.split(b"data: ", 1)[1])["message"]
    assert (message["model"], message["provider"]) == ("router/model", "anthropic")
    assert scanner.finished and scanner.stop_reason == "end_turn"
    assert (scanner.usage.input_tokens, scanner.usage.cache_read_input_tokens, scanner.usage.output_tokens) \
        == (120, 30, 42)
    assert not scanner.close_usage().estimated


def test_text_that_looks_like_an_event_line_is_not_taken_for_one():
    # Inside JSON a newline is escaped, so "event: message_stop" in a text delta never starts a line.
    scanner, _ = scan([b"".join([START, event("content_block_delta", {"delta": {"text": "\nevent: message_stop\n"}})])])
    assert not scanner.finished


def test_crlf_line_endings_are_understood():
    scanner, out = scan([b"".join(stream(["a"])).replace(b"\n", b"\r\n")])
    assert scanner.finished and scanner.usage.output_tokens == 42
    assert out.endswith(b"\n\n")


def test_a_stream_cut_short_keeps_the_output_reported_so_far_flagged_estimated():
    # The relay's meter counts the deltas' text (tests/gateway/test_stream_meter.py).
    events = stream(["x" * 400] * 3)
    scanner, _ = scan([b"".join(events[:-3])])
    usage = scanner.close_usage()
    assert usage.estimated and usage.output_tokens == 1


def test_an_error_event_is_reported():
    error = event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    scanner, out = scan([START, error])
    assert scanner.error == ("overloaded_error", "Overloaded")
    assert out.endswith(error)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=20), max_size=12), cuts=st.lists(st.integers(min_value=0), max_size=25))
def test_any_chunking_gives_the_same_bytes_and_usage(texts, cuts):
    data = b"".join(stream(texts))
    whole_scanner, whole = scan([data])
    scanner, out = scan(split(data, cuts))
    assert out == whole
    assert scanner.finished and scanner.usage == whole_scanner.usage and scanner.started == whole_scanner.started
