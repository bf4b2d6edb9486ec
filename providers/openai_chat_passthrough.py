"""A chat completions request to an OpenAI-compatible upstream, passed through: the client's own bytes
with `model` spliced and the router's fields cut, as the Anthropic path treats a Messages request
(unknown fields survive). A stream asks for its usage (`stream_options.include_usage`) so that the
gateway can count it, and a client that did not ask is not shown the extra usage chunk.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from providers.anthropic import upstream_body as spliced
from providers.anthropic_events import usage_to_account
from providers.base import ROUTER_FIELDS, Usage
from providers.jsonedit import EditError, edit_members
from providers.openai_chat_response import anthropic_usage
from providers.sse import EventSplitter, event_data

_USAGE = b'"usage"'
# A stream that never reports usage is counted from its size: a chunk's JSON envelope is some 40
# times the few characters of text it carries.
_BYTES_PER_CHAR = 40


def upstream_body(raw: bytes, values: Mapping[str, msgspec.Raw], upstream_model: str, *,
                  stream: bool) -> tuple[bytes, bool]:
    """The bytes for the upstream, and whether the usage chunk was added (the client did not ask)."""
    router_fields = [f for f in ROUTER_FIELDS if f in values]
    options = _decoded(values.get("stream_options"))
    if not stream or (isinstance(options, dict) and options.get("include_usage") is True):
        return spliced(raw, upstream_model, router_fields=router_fields, values=values), False
    options = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    present = "stream_options" in values
    try:
        body = edit_members(raw, replace={"model": upstream_model, **({"stream_options": options} if present else {})},
                            remove=router_fields, append=None if present else {"stream_options": options})
    except EditError:  # a member repeated: decoding keeps the last of each, as routing did
        decoded = {k: v for k, v in orjson.loads(raw).items() if k not in ROUTER_FIELDS}
        body = orjson.dumps({**decoded, "model": upstream_model, "stream_options": options})
    return body, True


def _decoded(value: msgspec.Raw | None) -> Any:
    if value is None:
        return None
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None


def usage_of_completion(completion: Any) -> Usage:
    usage = completion.get("usage") if isinstance(completion, Mapping) else None
    return usage_to_account(anthropic_usage(usage if isinstance(usage, Mapping) else None),
                            output_counted=isinstance(usage, Mapping), output_chars=0)


class UsageFilter:
    """Passes a chunk stream through as it arrives, cut at event boundaries; reads the usage chunk,
    and drops it when the client did not ask for it (`hide`). Only events that name `usage` are
    decoded."""

    def __init__(self, *, hide: bool) -> None:
        self.hide = hide
        self._splitter = EventSplitter()
        self._usage: dict[str, int] | None = None
        self._chars = 0

    def feed(self, chunk: bytes) -> bytes:
        block = self._splitter.feed(chunk)
        self._chars += len(block)
        if _USAGE not in block:
            return block
        kept = []
        for event in block.split(b"\n\n"):
            if event and _USAGE in event and self._read_usage(event) and self.hide:
                continue
            kept.append(event)
        return b"\n\n".join(kept)

    def _read_usage(self, event: bytes) -> bool:
        """Whether `event` is the usage chunk (no choices) once its usage is read."""
        try:
            payload = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return False
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if not isinstance(usage, Mapping):
            return False
        self._usage = anthropic_usage(usage)
        return not payload.get("choices")

    def usage(self) -> Usage:
        """What the stream used; a stream that never reported it is estimated from its size."""
        return usage_to_account(self._usage or anthropic_usage(None), output_counted=self._usage is not None,
                                output_chars=self._chars // _BYTES_PER_CHAR)
