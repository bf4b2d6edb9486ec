"""Server-sent events as bytes: splitting a byte stream into whole events, and reading their names.

Events are kept as the exact bytes that arrived, so forwarding one costs a slice, not a re-encode.
"""
from __future__ import annotations

import orjson


class EventSplitter:
    """Cuts an arbitrarily chunked SSE byte stream into complete events (each ending in a blank line)."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data
            return []
        self._tail = data[end + 2:]
        return [e + b"\n\n" for e in data[:end].split(b"\n\n") if e.strip(b"\n")]

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not been completed yet."""
        return self._tail


def event_name(event: bytes) -> bytes:
    """The `event:` field of an event, or b"" when it has none."""
    if event.startswith(b"event:"):
        line_end = event.find(b"\n")
        return event[6:line_end].strip()
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip()
    return b""


def event_data(event: bytes) -> bytes:
    """The `data:` payload of an event (several data lines joined by newlines)."""
    parts = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in event.split(b"\n")]
    return b"\n".join(p for p in parts if p is not None)


def encode_event(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
