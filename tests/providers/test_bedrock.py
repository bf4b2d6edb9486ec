"""Bedrock's InvokeModel wire format: request building, the event-stream decoder (CRCs checked,
any chunking), the stream translated back into Anthropic SSE, and Bedrock's errors mapped to
Anthropic's types."""
from __future__ import annotations

import asyncio
import base64
import json

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.credentials.sigv4 import SigV4Credentials
from providers import bedrock
from providers.bedrock import (
    EventStreamDecoder,
    EventStreamError,
    InvokeStreamTranslator,
)
from tests.fakes.anthropic import stream_events
from tests.fakes.bedrock import (
    BedrockFake,
    chunk_frame,
    error_reply,
    events_of,
    exception_frame,
    frame,
    stream_frames,
    stream_reply,
)
from tests.fakes.openai import anthropic_events, assemble_message

KEY = ("AKIAFAKEKEYAAAAAAAAA", "secretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
MODEL_ID = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def split_sse(data: bytes) -> list[bytes]:
    return [part + b"\n\n" for part in data.split(b"\n\n") if part]


# -- request building ---------------------------------------------------------------------------

def test_invoke_paths_encode_the_model_id_as_one_segment():
    assert bedrock.invoke_path(MODEL_ID, stream=False) == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0"
    assert bedrock.invoke_path(arn, stream=True) == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream")
    assert bedrock.runtime_base_url("eu-west-3") == "https://bedrock-runtime.eu-west-3.amazonaws.com"


def test_invoke_body_drops_model_stream_and_router_fields_and_adds_version_and_betas():
    raw = (b'{"model": "anthropic/claude-sonnet-4.5", "max_tokens": 5, "stream": true,\n'
           b' "messages": [{"role": "user", "content": "h\\u00e9 \\"x\\""}], "provider": {"order": ["a"]},'
           b' "temperature": 0.50, "unknown_future_field": {"k": [1, 2.0]}}')
    body = bedrock.invoke_body(raw, beta="interleaved-thinking-2025-05-14, context-1m-2025-08-07")
    assert json.loads(body) == {
        "max_tokens": 5, "messages": [{"role": "user", "content": 'hé "x"'}], "temperature": 0.5,
        "unknown_future_field": {"k": [1, 2.0]}, "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]}
    # Nested values are the client's bytes, not a re-encoding.
    assert b'"content": "h\\u00e9 \\"x\\""' in body and b'"temperature":0.50' in body


def test_invoke_body_without_beta_header_keeps_the_clients_own_and_replaces_its_version():
    body = json.loads(bedrock.invoke_body(b'{"model":"m","anthropic_version":"old","anthropic_beta":["x"],'
                                          b'"max_tokens":1,"messages":[]}'))
    assert body == {"anthropic_beta": ["x"], "max_tokens": 1, "messages": [], "anthropic_version": "bedrock-2023-05-31"}


def test_stream_asks_for_the_event_stream():
    assert bedrock.invoke_headers(stream=True)["accept"] == "application/vnd.amazon.eventstream"
    assert bedrock.invoke_headers(stream=False)["accept"] == "application/json"


# -- the event-stream decoder -------------------------------------------------------------------

def test_decoder_reads_headers_and_payloads():
    data = chunk_frame({"type": "ping"}) + exception_frame("throttlingException", "Too many requests")
    first, second = EventStreamDecoder().feed(data)
    assert first.headers == {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    assert base64.b64decode(json.loads(first.payload)["bytes"]) == b'{"type":"ping"}'
    assert second.headers[":exception-type"] == "throttlingException"
    assert json.loads(second.payload) == {"message": "Too many requests"}


def test_decoder_reads_every_header_type():
    import struct
    headers = (b"\x01a\x00" + b"\x01b\x01" + b"\x01c\x02\xff" + b"\x01d\x03\x00\x10" + b"\x01e\x04\x00\x00\x01\x00"
               + b"\x01f\x05" + struct.pack(">q", -2) + b"\x01g\x06\x00\x02\x00\x01" + b"\x01h\x08"
               + struct.pack(">q", 1700000000000) + b"\x01i\x09" + bytes(range(16)))
    import zlib
    total = 12 + len(headers) + 2 + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + b"{}"
    (decoded,) = EventStreamDecoder().feed(message + struct.pack(">I", zlib.crc32(message)))
    assert decoded.headers == {"a": True, "b": False, "c": -1, "d": 16, "e": 256, "f": -2, "g": b"\x00\x01",
                               "h": 1700000000000, "i": bytes(range(16))}
    assert decoded.payload == b"{}"


def test_decoder_refuses_a_corrupt_prelude():
    data = bytearray(chunk_frame({"type": "ping"}))
    data[3] ^= 0x01  # the total length
    with pytest.raises(EventStreamError, match="prelude CRC"):
        EventStreamDecoder().feed(bytes(data))


def test_decoder_refuses_a_corrupt_payload():
    data = bytearray(chunk_frame({"type": "ping"}))
    data[-10] ^= 0x20
    with pytest.raises(EventStreamError, match="message CRC"):
        EventStreamDecoder().feed(bytes(data))


def test_decoder_holds_an_incomplete_message_until_it_is_complete():
    data = chunk_frame({"type": "ping"})
    decoder = EventStreamDecoder()
    assert decoder.feed(data[:5]) == [] and decoder.feed(data[5:-1]) == []
    assert len(decoder.feed(data[-1:])) == 1


STREAM = stream_frames(["Hello", " wor", "ld ", "ünï ✓"], input_tokens=7, output_tokens=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=sum(map(len, STREAM))), max_size=40))
def test_any_rechunking_gives_the_same_events(cuts):
    data = b"".join(STREAM)
    points = sorted(set(cuts))
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    translator = InvokeStreamTranslator()
    out = b"".join(translator.feed(piece) for piece in pieces)
    whole = InvokeStreamTranslator().feed(data)
    assert out == whole and translator.error is None


def test_translated_stream_is_the_anthropic_event_sequence():
    out = InvokeStreamTranslator().feed(b"".join(STREAM))
    events = anthropic_events(split_sse(out))
    expected = events_of(stream_events(["Hello", " wor", "ld ", "ünï ✓"], input_tokens=7, output_tokens=4, pings=0))
    assert [e["type"] for e in events] == [e["type"] for e in expected]
    assert events[:-1] == expected[:-1]
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 4
    message = assemble_message(events)
    assert message.content[0].text == "Hello world ünï ✓" and message.usage.output_tokens == 4


@pytest.mark.parametrize("name, status, error_type", [
    ("throttlingException", 429, "rate_limit_error"),
    ("serviceUnavailableException", 529, "overloaded_error"),
    ("modelStreamErrorException", 502, "api_error"),
    ("internalServerException", 502, "api_error"),
    ("modelTimeoutException", 504, "timeout_error"),
    ("validationException", 400, "invalid_request_error"),
])
def test_exception_frame_in_the_stream_becomes_an_anthropic_error_event(name, status, error_type):
    translator = InvokeStreamTranslator()
    out = translator.feed(STREAM[0] + exception_frame(name, "it went wrong") + STREAM[1])
    events = anthropic_events(split_sse(out))
    assert [e["type"] for e in events] == ["message_start", "error"]
    assert events[1]["error"] == {"type": error_type, "message": "it went wrong"}
    assert translator.error == (status, error_type, "it went wrong")
    assert translator.feed(STREAM[2]) == b""  # nothing after the error


def test_corrupt_stream_ends_with_an_api_error_event():
    data = bytearray(STREAM[1])
    data[-6] ^= 0x01
    translator = InvokeStreamTranslator()
    events = anthropic_events(split_sse(translator.feed(STREAM[0] + bytes(data))))
    assert [e["type"] for e in events] == ["message_start", "error"]
    assert events[1]["error"]["type"] == "api_error" and "CRC" in events[1]["error"]["message"]


def test_error_message_frame_becomes_an_error_event():
    translator = InvokeStreamTranslator()
    data = frame({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b"")
    events = anthropic_events(split_sse(translator.feed(data)))
    assert events == [{"type": "error", "error": {"type": "api_error", "message": "boom"}}]


def test_event_with_an_unusual_layout_is_put_on_one_line():
    payload = json.dumps({"bytes": base64.b64encode(b'{\n "type": "ping"\n}').decode()}).encode()
    data = frame({":event-type": "chunk", ":message-type": "event"}, payload)
    assert InvokeStreamTranslator().feed(data) == b'event: ping\ndata: {"type":"ping"}\n\n'


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, name, expected", [
    (429, "ThrottlingException", (429, "rate_limit_error")),
    (429, "ModelNotReadyException", (529, "overloaded_error")),
    (503, "ServiceUnavailableException", (529, "overloaded_error")),
    (500, "InternalServerException", (502, "api_error")),
    (400, "ValidationException", (400, "invalid_request_error")),
    (403, "AccessDeniedException", (403, "permission_error")),
    (403, "UnrecognizedClientException", (403, "authentication_error")),
    (408, "ModelTimeoutException", (504, "timeout_error")),
    (424, "ModelErrorException", (502, "api_error")),
    (404, "ResourceNotFoundException", (404, "not_found_error")),
    (400, "ServiceQuotaExceededException", (429, "rate_limit_error")),
    (502, None, (502, "api_error")),
])
def test_bedrock_errors_map_to_anthropic_types(status, name, expected):
    reply = error_reply(status, name or "", "something happened")
    headers = reply.headers if name else {}
    assert bedrock.map_error(status, headers, reply.chunks[0]) == (*expected, "something happened")


def test_error_name_from_the_body_when_the_header_is_absent():
    body = b'{"__type":"com.amazon.coral.service#ThrottlingException","message":"slow down"}'
    assert bedrock.map_error(429, {}, body) == (429, "rate_limit_error", "slow down")


def test_credentials_errors_are_ours_and_other_errors_are_not():
    for name in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
                 "ExpiredTokenException"):
        assert bedrock.is_credentials_error(error_reply(403, name, "").headers)
    assert not bedrock.is_credentials_error(error_reply(400, "ValidationException", "").headers)


def test_error_messages_are_redacted():
    reply = error_reply(400, "ValidationException", "bad key sk-ant-api03-abcdefghijklmnop in api_key=hunter2hunter2")
    message = bedrock.map_error(400, reply.headers, reply.chunks[0])[2]
    assert "abcdefghijklmnop" not in message and "hunter2hunter2" not in message


def test_input_too_long_is_a_context_length_error():
    assert bedrock.is_context_length_error(400, b'{"message":"Input is too long for requested model."}')
    assert not bedrock.is_context_length_error(400, b'{"message":"messages: field required"}')


# -- over the wire, against the fake -------------------------------------------------------------

@pytest.fixture(scope="module")
def fake():
    with BedrockFake(keys={KEY[0]: (KEY[1], None)}) as server:
        yield server


async def _signed_post(fake, path, body, headers):
    creds = SigV4Credentials("bedrock", region="us-east-1", access_key_id=KEY[0], secret_access_key=KEY[1])
    await creds.start()
    url = fake.url + path
    headers = {**headers, **creds.headers_for("POST", url, headers, body)}
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            chunks = [chunk async for chunk in response.aiter_raw(97)]  # small reads: frames split across them
    return response, chunks


def test_streamed_invoke_over_the_wire_becomes_anthropic_sse(fake):
    fake.reset()
    raw = (b'{"model":"anthropic/claude-sonnet-4.5","stream":true,"max_tokens":6,'
           b'"messages":[{"role":"user","content":"hi"}]}')
    response, chunks = asyncio.run(_signed_post(fake, bedrock.invoke_path(MODEL_ID, stream=True),
                                                bedrock.invoke_body(raw), bedrock.invoke_headers(stream=True)))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    translator = InvokeStreamTranslator()
    sse = b"".join(translator.feed(chunk) for chunk in chunks)
    message = assemble_message(anthropic_events(split_sse(sse)))
    assert message.content[0].text == "tok " * 6 and message.usage.output_tokens == 6
    assert translator.events == 6 + 5


def test_scripted_throttling_before_the_first_event_is_seen_as_a_429(fake):
    fake.reset()
    fake.enqueue(stream_reply([exception_frame("throttlingException", "Too many tokens, please wait.")]))
    raw = b'{"model":"m","stream":true,"max_tokens":6,"messages":[{"role":"user","content":"hi"}]}'
    response, chunks = asyncio.run(_signed_post(fake, bedrock.invoke_path(MODEL_ID, stream=True),
                                                bedrock.invoke_body(raw), bedrock.invoke_headers(stream=True)))
    translator = InvokeStreamTranslator()
    b"".join(translator.feed(chunk) for chunk in chunks)
    assert translator.error == (429, "rate_limit_error", "Too many tokens, please wait.") and translator.events == 0


def test_fake_refuses_a_body_that_still_names_the_model(fake):
    fake.reset()
    raw = b'{"model":"m","max_tokens":6,"messages":[]}'
    response, chunks = asyncio.run(_signed_post(fake, bedrock.invoke_path(MODEL_ID, stream=False), raw,
                                                bedrock.invoke_headers(stream=False)))
    status, error_type, message = bedrock.map_error(response.status_code, response.headers, b"".join(chunks))
    assert (status, error_type) == (400, "invalid_request_error") and "extraneous key [model]" in message


def test_messages_path_is_anthropic_passthrough(fake):
    fake.reset()
    raw = (b'{"model":"anthropic.claude-sonnet-4-5-20250929-v1:0","max_tokens":3,'
           b'"messages":[{"role":"user","content":"hi"}]}')
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    response, chunks = asyncio.run(_signed_post(fake, "/anthropic/v1/messages", raw, headers))
    assert response.status_code == 200
    assert orjson.loads(b"".join(chunks))["usage"]["output_tokens"] == 3
    assert fake.requests[-1].body == raw


def test_translated_stream_feeds_the_anthropic_scanner_that_counts_usage():
    from providers.anthropic import StreamScanner

    scanner = StreamScanner(model="anthropic/claude-sonnet-4.5", provider="amazon-bedrock")
    translator = InvokeStreamTranslator()
    data = b"".join(STREAM)
    out = b"".join(scanner.feed(translator.feed(data[i:i + 50])) for i in range(0, len(data), 50))
    assert scanner.finished and scanner.stop_reason == "end_turn"
    assert scanner.close_usage().as_dict() == {"input_tokens": 7, "output_tokens": 4,
                                               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    start = anthropic_events(split_sse(out))[0]
    assert start["message"]["model"] == "anthropic/claude-sonnet-4.5"
    assert start["message"]["provider"] == "amazon-bedrock"
