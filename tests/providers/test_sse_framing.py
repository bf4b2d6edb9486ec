"""SSE framing whatever the upstream's line ends and chunking: LF, CRLF and lone CR (mixed, as the
SSE grammar allows), cut anywhere (a CRLF split across two reads included), give the same events."""
from __future__ import annotations

import orjson
from hypothesis import given, settings, strategies as st

from providers.anthropic import StreamScanner
from providers.sse import EventSplitter, event_data
from tests.providers.test_anthropic_stream import split, stream

LINE_ENDS = (b"\n", b"\r\n", b"\r")


def restyle(lf_stream: bytes, ends: list[int]) -> bytes:
    """`lf_stream` with its i-th line end replaced by LINE_ENDS[ends[i % len(ends)]]; a CR line end
    followed by an empty line's LF would read as one CRLF, so that LF becomes a CRLF."""
    lines = lf_stream.split(b"\n")
    out, previous = [lines[0]], b""
    for i, line in enumerate(lines[1:]):
        end = LINE_ENDS[ends[i % len(ends)]]
        if previous == b"\r" and end == b"\n" and not out[-1]:
            end = b"\r\n"
        out += (end, line)
        previous = end
    return b"".join(out)


def events_of(blocks: bytes) -> list[bytes]:
    assert blocks.endswith(b"\n\n") or not blocks
    return [e + b"\n\n" for e in blocks.split(b"\n\n")[:-1]]


def splitter_output(chunks: list[bytes]) -> bytes:
    splitter = EventSplitter()
    return b"".join(splitter.feed(chunk) for chunk in chunks)


def test_a_crlf_split_across_two_reads_ends_the_event_at_once():
    splitter = EventSplitter()
    assert splitter.feed(b"event: ping\r\ndata: {}\r\n\r") == b"event: ping\ndata: {}\n\n"
    assert splitter.feed(b"\nevent: ping\r\n") == b""  # the LF belonged to the CR before it
    assert splitter.feed(b"data: {}\r\n\r\n") == b"event: ping\ndata: {}\n\n"


def test_lone_cr_line_ends_are_line_ends():
    splitter = EventSplitter()
    assert splitter.feed(b"event: ping\rdata: {}\r\revent: ping\rdata: {}\r\r") == \
        b"event: ping\ndata: {}\n\nevent: ping\ndata: {}\n\n"


def test_a_stream_with_lone_cr_line_ends_is_scanned_for_its_usage_and_end():
    data = restyle(b"".join(stream(["Hello", " there"])), [2])
    scanner = StreamScanner(model="router/model", provider="p")
    out = b"".join(scanner.feed(chunk) for chunk in split(data, [7, 300, 301]))
    assert scanner.finished and scanner.usage.output_tokens == 42 and scanner.stop_reason == "end_turn"
    assert b"\r" not in out
    start = orjson.loads(events_of(out)[0].split(b"data: ", 1)[1])
    assert start["message"]["provider"] == "p"


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(max_size=12), max_size=8),
       ends=st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_any_rechunking_in_any_line_end_style_yields_the_same_events(texts, ends, cuts):
    lf_stream = b"".join(stream(texts))
    styled = restyle(lf_stream, ends)
    assert events_of(splitter_output(split(styled, cuts))) == events_of(lf_stream)

    reference, expected = StreamScanner(model="m", provider="p"), None
    expected = reference.feed(lf_stream)
    scanner = StreamScanner(model="m", provider="p")
    out = b"".join(scanner.feed(chunk) for chunk in split(styled, cuts))
    assert events_of(out) == events_of(expected)
    assert scanner.finished and scanner.usage == reference.usage and scanner.started == reference.started


LINE_PIECES = (b"event:", b"event: message_delta", b"data:", b"data: ", b"data:  {}", b'{"a":1}', b": comment",
               b"id: 7", b"retry: 10", b" ", b"x")


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.lists(st.sampled_from(LINE_PIECES), max_size=3).map(b"".join), max_size=5),
       blank_lines=st.integers(min_value=0, max_value=2))
def test_an_events_data_is_its_data_lines_payloads_joined_by_newlines(lines, blank_lines):
    event = b"\n".join(lines) + b"\n" * blank_lines
    payloads = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    assert event_data(event) == b"\n".join(payloads)
