"""The chat completions passthrough's pure parts: the body the upstream gets, and the usage read from
(and, when the client did not ask, cut out of) the stream it answers."""
from __future__ import annotations

import json

import pytest

from gateway.stream_meter import StreamMeter
from providers.jsonedit import top_level_values
from providers.openai_chat_passthrough import API, ChunkRelay, UsageFilter, upstream_body, usage_of_completion
from tests.fakes.openai import StreamScript, Usage, stream_chunks

RAW = b'{"model":"router/m", "messages":[{"role":"user","content":"hi"}],  "seed": 7, "trace": {"a": 1}%s}'


def body_for(extra: bytes, *, stream: bool) -> tuple[bytes, bool]:
    raw = RAW % extra
    return upstream_body(raw, top_level_values(raw), "up-model", stream=stream)


def test_json_request_keeps_the_clients_bytes_but_model_and_router_fields():
    body, added = body_for(b"", stream=False)
    assert not added
    assert body == b'{"model":"up-model", "messages":[{"role":"user","content":"hi"}],  "seed": 7}'


def test_stream_asks_for_usage_when_the_client_did_not():
    body, added = body_for(b', "stream": true', stream=True)
    assert added and json.loads(body)["stream_options"] == {"include_usage": True}
    assert body.startswith(b'{"model":"up-model", "messages":[{"role":"user","content":"hi"}],  "seed": 7')


@pytest.mark.parametrize("options, added", [(b'{"include_usage": true}', False), (b'{"include_usage": false}', True),
                                            (b'{"include_obfuscation": false}', True)])
def test_stream_options_of_the_client_are_kept_with_usage_on(options, added):
    body, was_added = body_for(b', "stream": true, "stream_options": ' + options, stream=True)
    assert was_added is added
    sent = json.loads(body)["stream_options"]
    assert sent["include_usage"] is True and {k: v for k, v in sent.items() if k != "include_usage"} == \
        {k: v for k, v in json.loads(options).items() if k != "include_usage"}


def stream(usage: bool) -> bytes:
    return b"".join(stream_chunks(StreamScript(text=["Hel", "lo"], usage=Usage(prompt_tokens=11, completion_tokens=2,
                                                                                cached_tokens=4) if usage else None)))


@pytest.mark.parametrize("cut", [1, 5, 64, 10_000])
def test_a_hidden_usage_chunk_is_read_and_cut_out_whatever_the_chunking(cut):
    raw = stream(usage=True)
    usage = UsageFilter(hide=True)
    out = b"".join(usage.feed(raw[i:i + cut]) for i in range(0, len(raw), cut))
    assert b'"usage"' not in out.replace(b'"usage":null', b"") and out.endswith(b"data: [DONE]\n\n")
    assert out == b"".join(e + b"\n\n" for e in raw.split(b"\n\n") if e and not (b'"choices":[]' in e))
    counted = usage.usage()
    assert (counted.input_tokens, counted.cache_read_input_tokens, counted.output_tokens) == (7, 4, 2)
    assert not counted.estimated


def test_a_usage_chunk_the_client_asked_for_passes_through():
    raw = stream(usage=True)
    usage = UsageFilter(hide=False)
    assert usage.feed(raw) == raw and usage.usage().output_tokens == 2


def test_a_stream_without_usage_is_left_to_the_meter_which_counts_the_chunks_text():
    usage = UsageFilter(hide=True)
    raw = stream(usage=False)
    usage.feed(raw)
    counted = usage.usage()
    assert counted.estimated and counted.output_tokens == 0
    meter = StreamMeter(chars_per_token=1.0, max_tokens=None, api=API)
    meter.sent(raw)
    assert meter.settle(counted).output_tokens == len("Hello")


def test_json_usage_is_read_from_the_completion():
    counted = usage_of_completion({"usage": {"prompt_tokens": 9, "completion_tokens": 3}})
    assert (counted.input_tokens, counted.output_tokens, counted.estimated) == (9, 3, False)


def relay() -> ChunkRelay:
    return ChunkRelay(hide_usage=True, provider="openai", secrets=("sk-upstream-secret-9",))


def test_the_relay_drops_keep_alives_before_the_first_chunk_and_ends_at_done():
    chunks = stream(usage=True)
    translator = relay()
    assert translator.feed(b": PROCESSING\n\n") == b"" and not translator.started
    out = translator.feed(chunks)
    assert translator.started and translator.finished and out.startswith(b"data: {")
    assert translator.finish() == b"" and translator.failure is None
    assert translator.close_usage().output_tokens == 2


def test_an_error_object_before_the_first_chunk_is_the_upstreams_failure_redacted():
    translator = relay()
    translator.feed(b'data: {"error": {"message": "bad key sk-upstream-secret-9", "type": "server_error"}}\n\n')
    assert not translator.started and translator.error is not None
    assert "sk-upstream-secret-9" not in translator.error[1]


def test_an_error_object_midway_ends_the_stream_and_one_cut_short_gets_openais_error_chunk():
    translator = relay()
    translator.feed(stream_chunks(StreamScript(text=["a"]))[0])
    out = translator.feed(b'data: {"error": {"message": "sk-upstream-secret-9 overloaded", "code": 529}}\n\n')
    assert b"sk-upstream-secret-9" not in out and translator.failure[0] == "overloaded_error"
    assert translator.finish() == b""
    cut = relay()
    cut.feed(stream_chunks(StreamScript(text=["a"]))[0])
    tail = cut.finish()
    assert json.loads(tail[6:])["error"]["message"] == "provider openai ended the stream before [DONE]"
    assert cut.failure == ("api_error", "provider openai ended the stream before [DONE]")


def test_garbage_is_not_a_stream_that_started():
    translator = relay()
    assert translator.feed(b"data: <html>\n\n") and not translator.started and translator.error is None
