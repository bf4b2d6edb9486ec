"""A fake Bedrock runtime that checks what Bedrock checks, and answers in its wire formats.

Every request must carry a valid AWS Signature V4 for service `bedrock` and the fake's region,
made with one of the fake's known keys: the signature is recomputed from the request as it
arrived (`aws_sigv4.verify`) and a wrong one is refused as AWS refuses it (403, `x-amzn-ErrorType`,
`{"message": ...}`). Then, unless a reply is scripted:
- `POST /model/{id}/invoke` checks the body (no `model` nor `stream`, `anthropic_version:
  bedrock-2023-05-31`, `max_tokens`, `messages`) and answers Anthropic's JSON message;
- `POST /model/{id}/invoke-with-response-stream` answers the Anthropic events of a text answer,
  each as a `chunk` event of AWS's binary event-stream framing with valid CRCs, `message_stop`
  carrying `amazon-bedrock-invocationMetrics` as Bedrock adds it;
- `POST /anthropic/v1/messages` is Anthropic's Messages API itself.

The event-stream encoder here is written from AWS's description of the framing, separately from
the decoder under test in `providers/bedrock.py`.
"""
from __future__ import annotations

import base64
import contextvars
import json
import re
import struct
import zlib
from collections.abc import Mapping

from aiohttp import web

from tests.fakes import anthropic as anthropic_fake
from tests.fakes.aws_sigv4 import verify
from tests.fakes.base import RecordedRequest, Reply, ScriptedServer

EVENT_STREAM = "application/vnd.amazon.eventstream"
_ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_INVOKE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>invoke|invoke-with-response-stream)$")
_raw_path: contextvars.ContextVar[str] = contextvars.ContextVar("raw_path", default="")


# -- event-stream framing ---------------------------------------------------------------------------

def _header(name: str, value: str) -> bytes:
    encoded_name, encoded_value = name.encode(), value.encode()
    return (struct.pack(">B", len(encoded_name)) + encoded_name + b"\x07"
            + struct.pack(">H", len(encoded_value)) + encoded_value)


def frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32 of those 8 bytes),
    string headers, payload, CRC32 of everything before it."""
    header_bytes = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_bytes))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + header_bytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk_frame(event: dict) -> bytes:
    """An Anthropic event as InvokeModelWithResponseStream carries it."""
    data = base64.b64encode(json.dumps(event, separators=(",", ":")).encode()).decode()
    payload = json.dumps({"bytes": data, "p": "abcdefghijklmnopqrstuvwxyz"}).encode()
    return frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}, payload)


def exception_frame(name: str, message: str) -> bytes:
    """A modeled exception in the stream, e.g. `throttlingException`, `modelStreamErrorException`."""
    return frame({":exception-type": name, ":content-type": "application/json", ":message-type": "exception"},
                 json.dumps({"message": message}).encode())


def events_of(sse_events: list[bytes]) -> list[dict]:
    return [json.loads(e.split(b"\ndata: ", 1)[1]) for e in sse_events]


def stream_frames(pieces: list[str], *, input_tokens: int = 10, output_tokens: int | None = None,
                  model: str = "claude-sonnet-4-5-20250929") -> list[bytes]:
    events = events_of(anthropic_fake.stream_events(pieces, model=model, input_tokens=input_tokens,
                                                    output_tokens=output_tokens, pings=0))
    events[-1]["amazon-bedrock-invocationMetrics"] = {
        "inputTokenCount": input_tokens, "outputTokenCount": output_tokens if output_tokens is not None
        else len(pieces), "invocationLatency": 420, "firstByteLatency": 110}
    return [chunk_frame(e) for e in events]


def stream_reply(frames: list[bytes], **kwargs) -> Reply:
    return Reply(content_type=EVENT_STREAM, chunks=frames,
                 headers={"x-amzn-requestid": "0c5c1f7e-fake", "x-amzn-bedrock-content-type": "application/json"},
                 **kwargs)


def error_reply(status: int, name: str, message: str) -> Reply:
    """An error answer as Bedrock's REST API sends it."""
    return Reply(status=status, headers={"x-amzn-ErrorType": name + _ERROR_NAMESPACE,
                                         "x-amzn-RequestId": "0c5c1f7e-fake"},
                 chunks=[json.dumps({"message": message}).encode()])


class BedrockFake(ScriptedServer):
    def __init__(self, *, keys: Mapping[str, tuple[str, str | None]] | None = None, region: str = "us-east-1",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.keys: dict[str, tuple[str, str | None]] = dict(keys or {})
        self.region = region
        self.refused: list[tuple[RecordedRequest, str]] = []  # requests refused before the script, and why
        self.signed_by: list[str] = []  # the key id of each accepted request

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        _raw_path.set(request.raw_path.split("?", 1)[0])
        return await super()._handle(request)

    def next_reply(self, request: RecordedRequest) -> Reply:
        refusal = verify(request.method, _raw_path.get(), request.query, request.headers, request.body,
                         keys=self.keys, region=self.region, service="bedrock")
        if refusal is not None:
            self.refused.append((request, refusal.error))
            return error_reply(refusal.status, refusal.error, refusal.message)
        self.signed_by.append(request.headers["authorization"].split("Credential=", 1)[1].split("/", 1)[0])
        invoke = _INVOKE.match(request.path)
        if invoke is not None:
            problem = self._invalid_invoke_body(request)
            if problem:
                return error_reply(400, "ValidationException", problem)
        elif request.path != "/anthropic/v1/messages":
            return error_reply(404, "UnknownOperationException", "")
        return super().next_reply(request)

    @staticmethod
    def _invalid_invoke_body(request: RecordedRequest) -> str | None:
        try:
            body = request.json()
        except ValueError:
            return "Malformed input request, please reformat your input and try again."
        if not isinstance(body, dict):
            return "Malformed input request: expected an object"
        for extraneous in ("model", "stream"):
            if extraneous in body:
                return f"Malformed input request: #: extraneous key [{extraneous}] is not permitted, " \
                       f"please reformat your input and try again."
        if body.get("anthropic_version") != "bedrock-2023-05-31":
            return "Malformed input request: #/anthropic_version: bedrock-2023-05-31 is expected"
        for required in ("max_tokens", "messages"):
            if required not in body:
                return f"Malformed input request: #: required key [{required}] not found"
        return None

    def auto_reply(self, request: RecordedRequest) -> Reply:
        body = request.json()
        output = min(int(body.get("max_tokens", 16)), anthropic_fake.AUTO_MAX_OUTPUT)
        invoke = _INVOKE.match(request.path)
        if invoke is None:  # the Messages path: Anthropic's own protocol
            return anthropic_fake.AnthropicFake.auto_reply(self, request)
        if invoke["op"] == "invoke-with-response-stream":
            return stream_reply(stream_frames(["tok "] * output, input_tokens=anthropic_fake.AUTO_INPUT_TOKENS,
                                              output_tokens=output))
        return anthropic_fake.json_reply(anthropic_fake.message_body(
            "tok " * output, input_tokens=anthropic_fake.AUTO_INPUT_TOKENS, output_tokens=output))
