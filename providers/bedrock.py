"""AWS Bedrock's native Claude API: InvokeModel and InvokeModelWithResponseStream. Pure, no I/O.

Requests go to `/model/{model id}/invoke` (JSON answer, Anthropic's message) or
`/model/{model id}/invoke-with-response-stream`, the model id URL-encoded as one path segment
(`anthropic.claude-sonnet-4-5-20250929-v1%3A0`, inference profile ARNs too). The body is the
Anthropic body without `model` and `stream`, with `anthropic_version: "bedrock-2023-05-31"` and
the `anthropic-beta` header's flags as `anthropic_beta`.

The stream is AWS's binary event-stream framing: each message is length-prefixed, with a CRC32 of
its prelude and one of the whole message, typed headers (`:message-type`, `:event-type`,
`:exception-type`) and, for a `chunk` event, the JSON payload `{"bytes": base64 Anthropic event}`.
`InvokeStreamTranslator` turns those frames back into Anthropic SSE as they arrive.

`PROTOCOL` is the `bedrock` protocol: these requests, Bedrock's errors, and the answers read by the
Anthropic passthrough (`providers.anthropic`), whose messages and events they are. The executor
signs the request (SigV4, `auth: sigv4`). Bedrock's Anthropic Messages path
(`/anthropic/v1/messages`) is Anthropic's protocol itself: a provider with `protocol: anthropic`.
"""
from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import orjson

from providers import anthropic, openai_chat_errors, protocol
from providers.anthropic_cloud import betas, cloud_body
from providers.anthropic_events import error_event
from providers.openai_chat_errors import redact_secrets
from providers.redaction import redact_bytes
from providers.sse import encode_event

BEDROCK_VERSION = "bedrock-2023-05-31"
SIGNING_SERVICE = "bedrock"
STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # AWS's own limit for one event-stream message
_PRELUDE = 12  # total length, headers length, prelude CRC
_MIN_MESSAGE = 16  # prelude and message CRC
_MAX_ERROR_MESSAGE = 1000


def runtime_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def invoke_path(model_id: str, *, stream: bool) -> str:
    segment = quote(model_id, safe="")
    if segment in (".", ".."):
        # A dot segment is removed from the path AWS signs (it normalises URIs), not from the one
        # sent: written encoded, it names the model in both.
        segment = segment.replace(".", "%2E")
    return f"/model/{segment}/" + ("invoke-with-response-stream" if stream else "invoke")


def invoke_body(raw: bytes, *, beta: str | None = None, values: Mapping[str, msgspec.Raw] | None = None) -> bytes:
    """The client's Anthropic body as InvokeModel takes it."""
    return cloud_body(raw, version=BEDROCK_VERSION, drop=("model", "stream"), beta=betas(beta) or None,
                      values=values)


def invoke_headers(*, stream: bool) -> dict[str, str]:
    """The headers InvokeModel(WithResponseStream) wants (all of them signed)."""
    if stream:
        return {"content-type": "application/json", "accept": STREAM_CONTENT_TYPE,
                "x-amzn-bedrock-accept": "application/json"}
    return {"content-type": "application/json", "accept": "application/json"}


# -- errors ---------------------------------------------------------------------------------------

# Bedrock's error names (without the `Exception` suffix, lower-cased: the HTTP API says
# `ThrottlingException`, the stream `throttlingException`) → (status for the client, Anthropic type).
# Statuses follow the gateway's rules, so the executor's classification reads them as it reads any
# other provider's: 429 with fallback, 529 overloaded, 502 for a broken upstream, 504 timeout, and
# 401/403 for the gateway's own credentials refused (the next endpoint is tried).
_ERRORS: dict[str, tuple[int, str]] = {
    "throttling": (429, "rate_limit_error"),
    "servicequotaexceeded": (429, "rate_limit_error"),
    "modelnotready": (529, "overloaded_error"),
    "serviceunavailable": (529, "overloaded_error"),
    "internalserver": (502, "api_error"),
    "internalfailure": (502, "api_error"),
    "modelerror": (502, "api_error"),
    "modelstreamerror": (502, "api_error"),
    "modeltimeout": (504, "timeout_error"),
    "validation": (400, "invalid_request_error"),
    "serialization": (400, "invalid_request_error"),
    "resourcenotfound": (404, "not_found_error"),
    "accessdenied": (403, "permission_error"),
    "unrecognizedclient": (403, "authentication_error"),
    "invalidsignature": (403, "authentication_error"),
    "incompletesignature": (403, "authentication_error"),
    "missingauthenticationtoken": (403, "authentication_error"),
    "invalidclienttokenid": (403, "authentication_error"),
    "expiredtoken": (403, "authentication_error"),
}
CREDENTIAL_ERRORS = frozenset({"accessdenied", "unrecognizedclient", "invalidsignature", "incompletesignature",
                               "missingauthenticationtoken", "invalidclienttokenid", "expiredtoken"})


def error_name(value: str | None) -> str:
    """`ThrottlingException:http://internal.amazon.com/...`, `com.amazon...#ThrottlingException`,
    `throttlingException` → `throttling`."""
    if not value:
        return ""
    name = value.split(":", 1)[0].rsplit("#", 1)[-1].strip().lower()
    return name[: -len("exception")] if name.endswith("exception") else name


def _message_of(body: bytes) -> str:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    message = None
    if isinstance(parsed, dict):
        message = parsed.get("message") or parsed.get("Message")
    if not isinstance(message, str) or not message.strip():
        text = body.decode("utf-8", "replace").strip()
        message = text if text and not text.startswith(("<", "{")) else ""
    return redact_secrets(message.strip())[:_MAX_ERROR_MESSAGE]


def map_exception(name: str | None, payload: bytes, *, status: int | None = None) -> tuple[int, str, str]:
    """(status for the client, Anthropic error type, redacted message) of a Bedrock error, named as
    the `x-amzn-errortype` header or a stream's `:exception-type` names it."""
    key = error_name(name)
    message = _message_of(payload)
    if key in _ERRORS:
        client_status, error_type = _ERRORS[key]
        return client_status, error_type, message or f"Bedrock answered {name.split(':', 1)[0]}"
    if status is not None:
        return openai_chat_errors.map_error(status, payload)
    return 502, "api_error", message or "Bedrock reported an error in the stream"


def map_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[int, str, str]:
    """(status for the client, Anthropic error type, redacted message) of a Bedrock error answer."""
    name = _header(headers, "x-amzn-errortype")
    if not name:
        try:
            parsed = orjson.loads(body)
            name = parsed.get("__type") if isinstance(parsed, dict) else None
        except orjson.JSONDecodeError:
            name = None
    return map_exception(name, body, status=status)


def is_credentials_error(headers: Mapping[str, str]) -> bool:
    """The error says the gateway's own AWS credentials were refused: another endpoint may serve."""
    return error_name(_header(headers, "x-amzn-errortype")) in CREDENTIAL_ERRORS


def is_context_length_error(status: int, body: bytes) -> bool:
    """A ValidationException saying the prompt is longer than the model takes ("Input is too long
    for requested model", "prompt is too long"): another model may fit it."""
    return openai_chat_errors.is_context_length_error(status, body)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


# -- the event stream -----------------------------------------------------------------------------

class EventStreamError(ValueError):
    """Corrupt event-stream framing: a CRC that does not match, a length out of bounds, a header
    that runs past its message. `messages` are the good ones the same feed completed before it."""

    messages: list["Message"] = []


@dataclass(slots=True)
class Message:
    headers: dict[str, Any]
    payload: bytes


def _parse_headers(data: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    i, end = 0, len(data)
    try:
        while i < end:
            name_len = data[i]
            name = data[i + 1:i + 1 + name_len].decode()
            i += 1 + name_len
            kind = data[i]
            i += 1
            if kind in (0, 1):
                value: Any = kind == 0
            elif kind == 2:
                value = struct.unpack_from(">b", data, i)[0]
                i += 1
            elif kind == 3:
                value = struct.unpack_from(">h", data, i)[0]
                i += 2
            elif kind == 4:
                value = struct.unpack_from(">i", data, i)[0]
                i += 4
            elif kind in (5, 8):  # long, timestamp (ms since the epoch)
                value = struct.unpack_from(">q", data, i)[0]
                i += 8
            elif kind in (6, 7):  # bytes, string
                length = struct.unpack_from(">H", data, i)[0]
                raw = data[i + 2:i + 2 + length]
                if len(raw) != length:
                    raise EventStreamError("an event-stream header value runs past its message")
                value = raw.decode() if kind == 7 else bytes(raw)
                i += 2 + length
            elif kind == 9:
                value = bytes(data[i:i + 16])
                i += 16
            else:
                raise EventStreamError(f"unknown event-stream header type {kind}")
            if i > end:
                raise EventStreamError("an event-stream header runs past its message")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed event-stream headers: {exc}") from None
    return headers


class EventStreamDecoder:
    """Cuts AWS event-stream bytes, chunked any way, into checked messages."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by `data`; raises EventStreamError on corrupt framing (carrying the
        messages before it: what came before a corrupt frame was good)."""
        messages: list[Message] = []
        try:
            self._read(data, messages)
        except EventStreamError as exc:
            exc.messages = messages
            raise
        return messages

    def _read(self, data: bytes, messages: list[Message]) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while len(buffer) - at >= _PRELUDE:
            total, headers_len, prelude_crc = struct.unpack_from(">III", buffer, at)
            if zlib.crc32(buffer[at:at + 8]) != prelude_crc:
                raise EventStreamError("event-stream prelude CRC mismatch")
            if total < _MIN_MESSAGE or total > self._max or headers_len > total - _MIN_MESSAGE:
                raise EventStreamError(f"event-stream message length {total} out of bounds")
            if len(buffer) - at < total:
                break
            end = at + total
            (message_crc,) = struct.unpack_from(">I", buffer, end - 4)
            if zlib.crc32(buffer[at:end - 4]) != message_crc:
                raise EventStreamError("event-stream message CRC mismatch")
            headers_start = at + _PRELUDE
            headers = _parse_headers(bytes(buffer[headers_start:headers_start + headers_len]))
            messages.append(Message(headers, bytes(buffer[headers_start + headers_len:end - 4])))
            at = end
        if at:
            del buffer[:at]


_EVENT_TYPE = re.compile(rb'^\s*\{\s*"type"\s*:\s*"([A-Za-z_]+)"')


def _sse(event: bytes) -> bytes:
    match = _EVENT_TYPE.match(event)
    if match is not None and b"\n" not in event and b"\r" not in event:
        return b"event: " + match.group(1) + b"\ndata: " + event + b"\n\n"
    parsed = orjson.loads(event)  # unusual layout: read it once to name it and put it on one line
    name = parsed.get("type") if isinstance(parsed, dict) else None
    return encode_event(name if isinstance(name, str) else "message", parsed)


class InvokeStreamTranslator:
    """InvokeModelWithResponseStream bytes → Anthropic SSE bytes, event for event as they arrive.

    Each `chunk` event becomes the Anthropic event its payload carries, its JSON as Bedrock sent it
    (Bedrock's `amazon-bedrock-invocationMetrics` on `message_stop` included). An exception frame,
    or a corrupt frame, becomes one Anthropic `error` event, kept in `error` as (status, type,
    message) for the executor, and ends the translation.
    """

    __slots__ = ("_decoder", "error", "events")

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        self.error: tuple[int, str, str] | None = None
        self.events = 0

    def feed(self, data: bytes) -> bytes:
        if self.error is not None:
            return b""
        out: list[bytes] = []
        try:
            messages, corrupt = self._decoder.feed(data), None
        except EventStreamError as exc:
            messages, corrupt = exc.messages, exc
        try:
            for message in messages:
                kind = message.headers.get(":message-type")
                if kind == "event":
                    if message.headers.get(":event-type") == "chunk":
                        out.append(_sse(base64.b64decode(orjson.loads(message.payload)["bytes"], validate=True)))
                        self.events += 1
                    continue  # other event types (an initial-response) carry nothing for the client
                if kind == "exception":
                    self.error = map_exception(message.headers.get(":exception-type"), message.payload)
                else:
                    text = str(message.headers.get(":error-message") or message.headers.get(":error-code") or "")
                    self.error = map_exception(str(message.headers.get(":error-code") or ""),
                                               orjson.dumps({"message": text}))
                break
        except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            self.error = (502, "api_error", f"unreadable Bedrock stream event: {type(exc).__name__}")
        if self.error is None and corrupt is not None:
            self.error = (502, "api_error", f"unreadable Bedrock stream: {corrupt}")
        if self.error is not None:
            out.append(error_event(self.error[1], self.error[2]))
        return b"".join(out)


# -- the protocol ---------------------------------------------------------------------------------

class InvokeStream(anthropic.StreamScanner):
    """An InvokeModelWithResponseStream answer as a StreamTranslator: the frames become Anthropic
    SSE (`InvokeStreamTranslator`), which the passthrough's scanner labels and accounts for."""

    __slots__ = ("_frames",)

    def __init__(self, **scanner) -> None:
        super().__init__(**scanner)
        self._frames = InvokeStreamTranslator()

    def feed(self, data: bytes) -> bytes:
        events = self._frames.feed(data)
        return super().feed(events) if events else b""


class InvokeModel:
    """The `bedrock` protocol: `POST {base_url}/model/{id}/invoke[-with-response-stream]`."""

    local = False
    answers = protocol.MESSAGES

    def options(self, attempt, require_parameters: bool) -> None:
        return None

    def request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        stream = call.request.stream
        try:
            body = invoke_body(call.request.raw, beta=call.beta, values=call.request.values)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise protocol.Refused(protocol.Failure("400", 400, "invalid_request_error",
                                                    "request body must be a JSON object")) from None
        headers = invoke_headers(stream=stream)
        if call.extra_headers:
            headers.update(call.extra_headers)
        return protocol.UpstreamRequest(call.base_url.rstrip("/") + invoke_path(call.upstream_model, stream=stream),
                                        headers, body, stream_type=STREAM_CONTENT_TYPE)

    def failure(self, call: protocol.Call, status: int, headers, body: bytes) -> protocol.Failure:
        body = redact_bytes(body, call.secrets)
        client_status, error_type, message = map_error(status, headers or {}, body)
        # Classified by what the error is (ModelNotReadyException comes as a 429 but is an overload,
        # ServiceQuotaExceededException as a 400 but is a rate limit), not by its HTTP status.
        return protocol.classify(call.provider, client_status, client_status=client_status, error_type=error_type,
                                 message=message, headers=headers,
                                 context_length=is_context_length_error(status, body))

    def message(self, call: protocol.Call, raw: bytes) -> protocol.Answer:
        return anthropic.PROTOCOL.message(call, raw)

    def stream(self, call: protocol.Call) -> InvokeStream:
        return InvokeStream(model=call.model, provider=call.provider, price=call.price, secrets=call.secrets)

    def count_request(self, call: protocol.Call) -> None:
        return None  # the gateway estimates

    def counted(self, raw: bytes) -> None:
        return None


PROTOCOL = InvokeModel()
