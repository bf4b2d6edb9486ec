"""Server-sent events as bytes: cutting a byte stream at event boundaries, and reading an event's data.

Events are kept as the exact bytes that arrived, so forwarding them costs a slice, not a re-encode.
"""
from __future__ import annotations

import orjson


class EventSplitter:
    """Cuts an arbitrarily chunked SSE byte stream after its last complete event (events end in a
    blank line), holding back the incomplete rest until the next chunk.

    Lines may end in LF, CRLF or a lone CR (the SSE grammar allows all three, mixed); every line end
    leaves as LF, whatever the chunking: a CRLF split across two chunks is one line end, not two."""

    __slots__ = ("_tail", "_cr")

    def __init__(self) -> None:
        self._tail = b""
        self._cr = False  # the last chunk ended in CR: an LF starting the next one belongs to it

    def feed(self, chunk: bytes) -> bytes:
        """The events completed so far as one block of bytes, as they arrived with line ends made LF
        (b"" when none)."""
        if self._cr or b"\r" in chunk:
            chunk = self._to_lf(chunk)
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

    def _to_lf(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        if self._cr and chunk[0] == 0x0A:
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def event_data(event: bytes) -> bytes:
    """The `data:` payload of an event (several data lines joined by newlines)."""
    # The usual event, `event: <name>` then one data line, is read with two searches.
    first_end = event.find(b"\n")
    if event.startswith(b"event:") and event.startswith(b"data:", first_end + 1):
        data_end = event.find(b"\n", first_end + 6)
        if data_end < 0 or not event[data_end:].strip(b"\n"):
            return event[first_end + 6:data_end if data_end >= 0 else len(event)].lstrip(b" ")
    parts = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in event.split(b"\n")]
    return b"\n".join(p for p in parts if p is not None)


def encode_event(name: str, payload: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
