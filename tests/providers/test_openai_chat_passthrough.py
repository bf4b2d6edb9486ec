"""The chat completions passthrough's pure parts: the body the upstream gets, and the usage read from
(and, when the client did not ask, cut out of) the stream it answers."""
from __future__ import annotations

import json

import pytest

from providers.jsonedit import top_level_values
from providers.openai_chat_passthrough import UsageFilter, upstream_body, usage_of_completion
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


def test_a_stream_without_usage_is_estimated():
    usage = UsageFilter(hide=True)
    usage.feed(stream(usage=False))
    counted = usage.usage()
    assert counted.estimated and counted.output_tokens >= 1


def test_json_usage_is_read_from_the_completion():
    counted = usage_of_completion({"usage": {"prompt_tokens": 9, "completion_tokens": 3}})
    assert (counted.input_tokens, counted.output_tokens, counted.estimated) == (9, 3, False)
