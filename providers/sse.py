"""Server-sent events as bytes: cutting a byte stream at event boundaries, and reading an event's data.

Events are kept as the exact bytes that arrived, so forwarding them costs a slice, not a re-encode.
"""
from __future__ import annotations

import orjson


class EventSplitter:
    """Cuts an arbitrarily chunked SSE byte stream after its last complete event (events end in a
    blank line), holding back the incomplete rest until the next chunk."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """The events completed so far as one block of bytes, as they arrived with CRLF line ends made LF
        (b"" when none)."""
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


def event_data(event: bytes) -> bytes:
    """The `data:` payload of an event (several data lines joined by newlines)."""
    parts = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in event.split(b"\n")]
    return b"\n".join(p for p in parts if p is not None)


def encode_event(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
