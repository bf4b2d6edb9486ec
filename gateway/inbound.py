"""OpenAI's inbound protocols on the gateway's one request path.

A chat completions or Responses request is translated to the canonical Anthropic Messages request
(`providers.openai_chat_inbound`, `providers.openai_responses_inbound`) and then served exactly as a
`POST /v1/messages` is: the same keys, admission, plan, retries, fallbacks and usage record, with
the inbound protocol named in the record. What the executor sends back (Anthropic JSON, SSE or
error envelope) passes through this module's `send`, which answers in the client's protocol:
OpenAI's body or stream, OpenAI's error envelope and statuses, and the headers OpenAI's SDKs read
(`x-request-id`, `x-ratelimit-*`). An upstream of the client's own API is given the client's body
instead (`Exchange.client`, read by the passthrough protocols the registry picks for it,
`providers.protocol.protocol_for`); its answer, begun in the client's API
(`Exchange.answered_in`), is forwarded as it is.
"""
from __future__ import annotations

import calendar
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import errors
from gateway.exchange import Exchange
from gateway.request import parse_json_object
from gateway.search.blocks import message_events
from providers import openai_chat_inbound, openai_responses_inbound
from providers.jsonedit import top_level_values
from providers.openai_inbound import Refused, StreamWriter, error_of_event, openai_error, stream_error
from providers.protocol import ClientRequest
from providers.sse import event_data

_RATELIMIT_PREFIX = b"anthropic-ratelimit-"
_DROPPED = (b"content-length", b"content-type")
_JSON = b"application/json"
_SSE = b"text/event-stream; charset=utf-8"


def openai_headers(headers: list[tuple[bytes, bytes]], now: float, *,
                   keep_length: bool = False) -> list[tuple[bytes, bytes]]:
    """The answer's headers as OpenAI's SDKs read them: `x-request-id` beside `request-id`, and the
    key's limits renamed x-ratelimit-{limit,remaining,reset}-{requests,tokens} (reset as seconds from
    now, "12s"). The body's type and length go unless `keep_length` (a body sent as it is)."""
    out = []
    for name, value in headers:
        if name in _DROPPED and not keep_length:
            continue
        if name.startswith(_RATELIMIT_PREFIX):
            kind, _, field = name[len(_RATELIMIT_PREFIX):].partition(b"-")
            if field == b"reset":
                value = _seconds_until(value, now)
            out.append((b"x-ratelimit-" + field + b"-" + kind, value))
            continue
        if name == b"request-id":
            out.append((b"x-request-id", value))
        out.append((name, value))
    return out


def _json_or_none(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _seconds_until(rfc3339: bytes, now: float) -> bytes:
    moment = _epoch(rfc3339)
    return b"0s" if moment is None else f"{max(0, int(moment - now))}s".encode()


@functools.lru_cache(maxsize=64)
def _epoch(rfc3339: bytes) -> int | None:
    """The resets of a key's limits are whole seconds, the same for every request of that second:
    parsed once each (strptime costs a small request's share of the path)."""
    try:
        return calendar.timegm(time.strptime(rfc3339.decode(), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Protocol:
    """One inbound protocol: its translator's functions (in `providers`) and what its answers are named."""
    name: str  # as the usage record names it
    id_prefix: str  # of the answer's id, the request id after it
    to_canonical: Callable[[dict], tuple[dict, Any]]  # the canonical request, and the answer's shape
    from_message: Callable[..., dict]  # an Anthropic Message → the protocol's answer
    writer: type[StreamWriter]  # the Anthropic stream → the protocol's stream
    stream_error: Callable[[str, str, int], bytes]  # (error type, message, events so far) → the event ending a stream
    output_limits: tuple[str, ...]  # the members that limit the answer's output tokens


def _chat_error(error_type: str, message: str, events: int) -> bytes:
    return stream_error(error_type, message)


def _responses_error(error_type: str, message: str, events: int) -> bytes:
    return openai_responses_inbound.error_event(error_type, message, sequence=events)


CHAT = Protocol("openai_chat", "chatcmpl-", openai_chat_inbound.to_canonical, openai_chat_inbound.from_message,
                openai_chat_inbound.ChunkWriter, _chat_error, ("max_completion_tokens", "max_tokens"))
RESPONSES = Protocol("openai_responses", "resp_", openai_responses_inbound.to_canonical,
                     openai_responses_inbound.from_message, openai_responses_inbound.EventWriter, _responses_error,
                     ("max_output_tokens",))


class OpenAIInbound:
    """One request's translation: `canonical` for its body, `send` for everything answered."""

    def __init__(self, protocol: Protocol, send) -> None:
        self.protocol = protocol
        self.name = protocol.name
        self._send = send
        self.exchange: Exchange | None = None
        self.shape: Any = None
        self._param: str | None = None
        self._start: dict | None = None  # the response start, held until the body it describes
        self._parts: list[bytes] = []
        self._writer: StreamWriter | None = None
        self._forward = False
        self._events = 0  # forwarded, when forwarding: a Responses error event's sequence_number

    def canonical(self, raw: bytes) -> bytes:
        body = parse_json_object(raw)
        try:
            canonical, self.shape = self.protocol.to_canonical(body)
        except Refused as exc:
            self._param = exc.param
            raise errors.InvalidRequest(str(exc)) from None
        if self.exchange is not None:  # for an upstream of the client's API (providers.protocol.protocol_for)
            values = top_level_values(raw)
            limits = any(name in values and bytes(values[name]) != b"null" for name in self.protocol.output_limits)
            self.exchange.client = ClientRequest(self.name, raw, values, limits_output=limits)
        return orjson.dumps(canonical)

    def _answer(self) -> dict[str, Any]:
        request_id = self.exchange.request_id if self.exchange is not None else "req_"
        return {"answer_id": self.protocol.id_prefix + request_id[4:], "created": int(time.time()),
                "shape": self.shape}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            raw_headers = list(message.get("headers", ()))
            if message["status"] == 200 and self.exchange is not None and self.exchange.answered_in == self.name:
                # The upstream spoke the client's API and its answer goes as it is (a passthrough).
                self._forward = True
                await self._send({"type": "http.response.start", "status": message["status"],
                                  "headers": openai_headers(raw_headers, time.time(), keep_length=True)})
                return
            headers = openai_headers(raw_headers, time.time())
            sse = any(n == b"content-type" and v.startswith(b"text/event-stream") for n, v in raw_headers)
            if sse and message["status"] == 200:
                self._writer = self.protocol.writer(**self._answer())
                await self._send({**message, "headers": headers + [(b"content-type", _SSE)]})
            else:
                self._start = {**message, "headers": headers}
            return
        if self._forward:
            body = message.get("body", b"")
            if body.startswith(b"event: error\n"):
                event = _json_or_none(event_data(body))  # an upstream's block may hold more than one event
                if isinstance(event, dict) and isinstance(event.get("error"), dict):
                    # The gateway's own end of a stream it cut (the deadline passed), in Anthropic's
                    # terms (an upstream's Responses error event has no `error` object): the client's.
                    message = {**message, "body": self.protocol.stream_error(*error_of_event(event), self._events)}
            self._events += body.count(b"\n\n")
            await self._send(message)
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self._writer is not None:
            out = self._writer.feed(body)
            if out or not more:
                await self._send({"type": "http.response.body", "body": out, "more_body": more})
            return
        self._parts.append(body)
        if more:
            return
        status, out, content_type = self._rendered(self._start["status"], b"".join(self._parts))
        headers = self._start["headers"] + [(b"content-type", content_type),
                                            (b"content-length", str(len(out)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": out})

    def _rendered(self, status: int, body: bytes) -> tuple[int, bytes, bytes]:
        if status >= 400:
            budget = bool(self.exchange and (self.exchange.limited_by or "").startswith("budget"))
            return *openai_error(status, body, budget=budget, param=self._param), _JSON
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return *openai_error(502, errors.error_body("api_error", "the upstream's answer could not be read")), _JSON
        if self.shape.stream:
            # A stream was asked for and a whole message came (an upstream that answered JSON): the
            # client still gets the stream it can read.
            writer = self.protocol.writer(**self._answer())
            return status, writer.feed(b"".join(message_events(message))), _SSE
        return status, orjson.dumps(self.protocol.from_message(message, **self._answer())), _JSON


INBOUND = {"/v1/chat/completions": CHAT, "/v1/responses": RESPONSES}
INBOUND_PATHS = {protocol.name: path for path, protocol in INBOUND.items()}
