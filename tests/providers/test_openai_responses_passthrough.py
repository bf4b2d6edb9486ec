"""The Responses passthrough's pure parts: the body the upstream gets, and the stream relay that
reads the usage of the terminal event, tells an upstream's failure from an answer, and ends a
stream cut short with the Responses error event."""
from __future__ import annotations

import json

import pytest

from gateway.stream_meter import StreamMeter
from providers.jsonedit import top_level_values
from providers.openai_responses_passthrough import API, EventRelay, upstream_body
from tests.fakes import openai_responses as r

SECRET = "sk-upstream-secret-7"


def body_for(raw: bytes) -> bytes:
    return upstream_body(raw, top_level_values(raw), "up-model")


def test_the_clients_bytes_go_with_model_spliced_router_fields_cut_and_store_off():
    body = body_for(b'{"model":"router/m",  "input": "hi", "trace": {"a": 1}}')
    assert body.startswith(b'{"model":"up-model",  "input": "hi"')
    assert json.loads(body) == {"model": "up-model", "input": "hi", "store": False}
    assert json.loads(body_for(b'{"model":"m","input":"hi","store":false}'))["store"] is False


def stream(script: r.Script) -> bytes:
    return b"".join(r.stream_events(script))


def relay() -> EventRelay:
    return EventRelay(provider="oresp", secrets=(SECRET,))


@pytest.mark.parametrize("cut", [1, 7, 100, 100_000])
def test_events_pass_as_they_came_and_the_terminal_events_usage_is_counted(cut):
    raw = stream(r.Script(items=[r.Text.of("Hel", "lo")], usage=r.Usage(input_tokens=30, output_tokens=2,
                                                                       cached_tokens=10)))
    translator = relay()
    out = b"".join(translator.feed(raw[i:i + cut]) for i in range(0, len(raw), cut))
    assert out == raw and translator.started and translator.finished
    assert translator.finish() == b"" and translator.failure is None
    usage = translator.close_usage()
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens, usage.estimated) == \
        (20, 10, 2, False)


def test_an_error_first_is_the_upstreams_failure_redacted():
    translator = relay()
    out = translator.feed(b": keep-alive\n\n" + r.sse_event({"type": "error", "code": "server_error",
                                                             "message": f"failed with {SECRET}"}))
    assert not translator.started and translator.error[0] == "api_error" and SECRET.encode() not in out


def test_a_failed_response_midway_is_how_the_stream_ended():
    translator = relay()
    translator.feed(stream(r.Script(items=[r.Text.of("a")], status="failed")))
    assert translator.started and translator.failure is not None and translator.finish() == b""


def test_a_stream_cut_short_gets_the_error_event_numbered_after_the_last_and_is_left_to_the_meter():
    raw = stream(r.Script(items=[r.Text.of("abcd", "efgh")], end=False))
    translator = relay()
    out = translator.feed(raw)
    tail = translator.finish()
    event = json.loads(tail.split(b"data: ", 1)[1])
    assert tail.startswith(b"event: error\n") and event["code"] == "api_error"
    assert event["sequence_number"] == len(r.stream_payloads(r.Script(items=[r.Text.of("abcd", "efgh")], end=False)))
    usage = translator.close_usage()
    assert usage.estimated and usage.output_tokens == 0
    meter = StreamMeter(chars_per_token=1.0, max_tokens=None, api=API)
    meter.sent(out)
    assert meter.settle(usage).output_tokens == 8
