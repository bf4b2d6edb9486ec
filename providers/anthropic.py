"""The Anthropic protocol: a lossless passthrough.

The upstream gets the client's own bytes with `model` rewritten and the router fields removed; the
answer comes back as bytes with `model` set to the router id and `provider` added. Streams are
scanned for usage, decoding only `message_start`, `message_delta` and `error`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from providers import protocol
from providers.anthropic_events import error_event
from providers.base import ROUTER_FIELDS, Usage
from providers.jsonedit import EditError, edit_top_level, label_answer, top_level_values
from providers.redaction import redact_bytes
from providers.sse import EventSplitter, event_data

DEFAULT_VERSION = "2023-06-01"
# The events the scanner reads, by their `event:` line; every other event passes unread.
_NOTABLE_EVENT = re.compile(rb"event: ?(message_start|message_delta|message_stop|error)[ \t]*\n")


class UnreadableBody(ValueError):
    """A body that must be re-encoded (it repeats a member) but holds what the encoder cannot
    write: nesting past its depth limit, a lone surrogate, an integer past 64 bits."""


def upstream_body(raw: bytes, upstream_model: str, *, client_model: str | None = None,
                  router_fields: Sequence[str] = ROUTER_FIELDS,
                  values: Mapping[str, msgspec.Raw] | None = None,
                  spans: Mapping[str, tuple[int, int, int]] | None = None) -> bytes:
    """The client's body for the upstream: `model` rewritten, router-only members removed.

    `router_fields` may name members that turn out to be absent; they are simply not found.
    `values` are the body's top-level values as the request decoder read them
    (`jsonedit.top_level_values`), which locate the members exactly; without them they are read here.
    `spans`, where they were located already (`MessagesRequest.spans`), spares locating them again.
    """
    if client_model == upstream_model and not router_fields:
        return raw
    try:
        if values is None:
            values, spans = top_level_values(raw), None
        return edit_top_level(raw, values, replace={"model": upstream_model}, remove=router_fields, spans=spans)
    except (EditError, msgspec.DecodeError):
        pass
    # Duplicate keys: decoding keeps the last of each, as routing did.
    try:
        body = {k: v for k, v in orjson.loads(raw).items() if k not in ROUTER_FIELDS}
        body["model"] = upstream_model
        return orjson.dumps(body)
    except (orjson.JSONDecodeError, TypeError) as exc:  # orjson's encode error is a TypeError
        raise UnreadableBody(f"request body repeats a member and cannot be re-encoded: {exc}") from None


def upstream_headers(*, api_key: str | None, version: str | None, beta: str | None,
                     extra: Mapping[str, str] | None = None, bearer: bool = False) -> dict[str, str]:
    """Headers for the upstream; the key goes in `x-api-key`, or `Authorization: Bearer` for hosts that
    want it (e.g. Bedrock's Anthropic-compatible API)."""
    headers = {"content-type": "application/json", "anthropic-version": version or DEFAULT_VERSION}
    if beta:
        headers["anthropic-beta"] = beta
    if extra:
        headers.update(extra)
    if api_key:
        if bearer:
            headers["authorization"] = "Bearer " + api_key
        else:
            headers["x-api-key"] = api_key
    return headers


def usage_of(message: Mapping[str, Any]) -> Usage:
    usage = Usage()
    if isinstance(message.get("usage"), dict):
        usage.update_from(message["usage"])
    return usage


def error_of(raw: bytes) -> tuple[str | None, str]:
    """(error.type, error.message) of an Anthropic error body, tolerating anything else."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, raw[:300].decode("utf-8", "replace")
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict):
        return (error.get("type") if isinstance(error.get("type"), str) else None,
                str(error.get("message", ""))[:1000])
    return None, raw[:300].decode("utf-8", "replace")


def is_context_length_error(status: int, message: str) -> bool:
    text = message.lower()
    return status in (400, 413) and ("prompt is too long" in text or "context length" in text
                                     or "context window" in text or "too many tokens" in text)


def is_moderation_error(status: int, message: str) -> bool:
    text = message.lower()
    return status in (400, 403) and ("moderation" in text or "content policy" in text or "flagged" in text)


class StreamScanner:
    """Forwards an Anthropic SSE stream event for event, reading usage on the way.

    `message_start` is the only event rewritten (router `model`, added `provider`); every other
    event leaves as the bytes that arrived, so the cost is accounted for but not added to the stream.
    """

    __slots__ = ("model", "provider", "price", "secrets", "usage", "stop_reason", "started", "finished",
                 "error", "failure", "_splitter", "_final_usage", "_begun")

    def __init__(self, *, model: str, provider: str, price: Callable[[Usage], float] | None = None,
                 secrets: Sequence[str | None] = ()) -> None:
        self.model = model
        self.provider = provider
        self.price = price
        self.secrets = secrets  # redacted from `error` events, which go to the client
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.started = False  # a readable message_start seen: the stream is Anthropic's
        self.finished = False  # message_stop seen
        self.error: tuple[str, str] | None = None  # (type, message) of an upstream `error` event
        self.failure: tuple[str, str] | None = None  # the error the stream ended with
        self._splitter = EventSplitter()
        self._final_usage = False
        self._begun = False  # a complete event has been seen

    def feed(self, chunk: bytes) -> bytes:
        """The events completed by `chunk`, as one block to forward (b"" while none is complete).

        Only the events that matter are looked at: found by name with one C-speed search per block,
        so a block of text deltas costs a search, not a loop over its events."""
        block = self._splitter.feed(chunk)
        if not block:
            return block
        # Only a message_start as the stream's very first event makes it Anthropic's.
        first_event_end = 0 if self._begun else block.find(b"\n\n") + 2
        self._begun = True
        edits: list[tuple[int, int, bytes]] = []  # (begin, end, replacement), in block order
        for match in _NOTABLE_EVENT.finditer(block):
            at = match.start()
            if at and block[at - 1] != 0x0A:
                continue  # not at the start of a line
            begin = block.rfind(b"\n\n", 0, at)
            begin = 0 if begin < 0 else begin + 2
            end = block.find(b"\n\n", at) + 2
            event = block[begin:end]
            name = match.group(1)
            if name == b"message_start":
                edits.append((begin, end, self._rewrite_start(event, first=end == first_event_end)))
            elif name == b"message_delta":
                self._read_delta(event)
            elif name == b"message_stop":
                self.finished = True
            else:
                redacted = redact_bytes(event, self.secrets)
                if redacted is not event:
                    edits.append((begin, end, redacted))
                self.error = error_of(event_data(redacted))
        if edits:
            parts, done = [], 0
            for begin, end, replacement in edits:
                if begin < done:
                    continue  # a second notable line inside an event already replaced
                parts += (block[done:begin], replacement)
                done = end
            parts.append(block[done:])
            block = b"".join(parts)
        return block

    def finish(self) -> bytes:
        """The upstream body ended: nothing to add after message_stop or the upstream's own error event,
        else the error event of a stream cut short."""
        if self.finished:
            return b""
        if self.error is not None:
            self.failure = self.error
            return b""
        return self.fail(f"provider {self.provider} ended the stream before message_stop", "api_error")

    def fail(self, message: str, error_type: str) -> bytes:
        self.failure = (error_type, message)
        return error_event(error_type, message)

    def close_usage(self) -> Usage:
        """The usage to account for. A stream cut short keeps the output reported so far, flagged
        `estimated`: the relay's meter (gateway/stream_meter.py) counts it from the deltas sent."""
        if not self._final_usage:
            self.usage.estimated = True
        return self.usage

    def usage_so_far(self, input_bound: int) -> Usage | None:
        """The input is known from message_start; once message_delta has come, the cost is incurred."""
        return None if self.stop_reason is not None or self._final_usage else self.usage

    def _rewrite_start(self, event: bytes, *, first: bool) -> bytes:
        try:
            payload = orjson.loads(event_data(event))
            message = payload["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return event
        if not isinstance(message, dict):
            return event
        self.started = self.started or first
        if isinstance(message.get("usage"), dict):
            self.usage.update_from(message["usage"])
        message["model"] = self.model
        message["provider"] = self.provider
        return b"event: message_start\ndata: " + orjson.dumps(payload) + b"\n\n"

    def cost(self) -> float:
        return self.price(self.usage) if self.price else 0.0

    def _read_delta(self, event: bytes) -> None:
        try:
            payload = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return
        delta = payload.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self.stop_reason = delta["stop_reason"]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage.update_from(usage)
            self._final_usage = True


class Passthrough:
    """The `anthropic` protocol: the client's bytes go upstream nearly as they are, and the answer's
    bytes come back with the router's model and provider; a stream is scanned, never re-encoded."""

    local = False
    answers = protocol.MESSAGES

    def options(self, attempt, require_parameters: bool) -> bool:
        """Whether the key goes in `Authorization: Bearer` (the `auth` option)."""
        return attempt.endpoint.options.auth == "bearer"

    def _body(self, call: protocol.Call) -> bytes:
        request = call.request
        try:
            return upstream_body(request.raw, call.upstream_model, client_model=request.model,
                                 router_fields=request.router_fields, values=request.values,
                                 spans=request.spans)
        except UnreadableBody as exc:
            raise protocol.Refused(protocol.Failure("400", 400, "invalid_request_error", str(exc))) from None

    def _headers(self, call: protocol.Call) -> dict[str, str]:
        return upstream_headers(api_key=call.api_key, version=call.version, beta=call.beta,
                                extra=call.extra_headers, bearer=call.options)

    def _url(self, call: protocol.Call, path: str) -> str:
        return call.base_url.rstrip("/") + path + (f"?{call.query}" if call.query else "")

    def request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        return protocol.UpstreamRequest(self._url(call, "/v1/messages"), self._headers(call), self._body(call))

    def failure(self, call: protocol.Call, status: int, headers, body: bytes) -> protocol.Failure:
        body = redact_bytes(body, call.secrets)
        error_type, message = error_of(body)
        context_length = is_context_length_error(status, message)
        moderation = is_moderation_error(status, message)
        if error_type is None:
            error_type = "invalid_request_error" if context_length or moderation else _type_for(status)
        return protocol.classify(call.provider, status, client_status=status, error_type=error_type,
                                 message=message, headers=headers, context_length=context_length,
                                 moderation=moderation, body=body)

    def message(self, call: protocol.Call, raw: bytes) -> protocol.Answer:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise protocol.bad_response(call.provider, "malformed JSON") from None
        if not isinstance(message, dict):
            raise protocol.bad_response(call.provider, "an unexpected body")
        usage = usage_of(message)
        cost = call.price(usage)
        return protocol.Answer(label_answer(raw, message, model=call.model, provider=call.provider, cost=cost),
                               usage, cost)

    def stream(self, call: protocol.Call) -> StreamScanner:
        return StreamScanner(model=call.model, provider=call.provider, price=call.price, secrets=call.secrets)

    def count_request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        return protocol.UpstreamRequest(self._url(call, "/v1/messages/count_tokens"), self._headers(call),
                                        self._body(call))

    def counted(self, raw: bytes) -> dict[str, Any] | None:
        return protocol.json_or_none(raw)


def _type_for(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}.get(
        status, "invalid_request_error" if status < 500 else "api_error")


PROTOCOL = Passthrough()
