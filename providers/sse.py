"""Server-sent events as bytes: splitting a byte stream into whole events, and reading their names.

Events are kept as the exact bytes that arrived, so forwarding them costs a slice, not a re-encode.
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

    def feed_block(self, chunk: bytes) -> bytes:
        """The complete events so far as one block of bytes, exactly as they arrived (b"" when none)."""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data
            return b""
        end += 2
        if end == len(data):
            self._tail = b""
            return data
        self._tail = data[end:]
        return data[:end]

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not been completed yet."""
        return self._tail


def event_data(event: bytes) -> bytes:
    """The `data:` payload of an event (several data lines joined by newlines)."""
    parts = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in event.split(b"\n")]
    return b"\n".join(p for p in parts if p is not None)


def encode_event(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
