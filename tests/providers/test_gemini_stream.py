"""streamGenerateContent?alt=sse → Anthropic stream events, as a client (the Anthropic SDK) reads them;
any re-chunking of the upstream bytes gives the same events, and the message the JSON answer gives."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.gemini import GeminiStreamTranslator, from_gemini_response
from tests.fakes.gemini import (
    Answer,
    Usage,
    function_call,
    response_body,
    sse_events,
    stream_chunks,
    stream_error_midway,
    text,
    thought,
)
from tests.fakes.openai import anthropic_events, assemble_message

MODEL, PROVIDER, MESSAGE_ID = "google/gemini-3.5-flash", "google", "msg_stream"


def translate(pieces: Iterable[bytes], *, finish: bool = True,
              translator: GeminiStreamTranslator | None = None) -> list[dict[str, Any]]:
    translator = translator or GeminiStreamTranslator(model=MODEL, provider=PROVIDER, message_id=MESSAGE_ID)
    raw: list[bytes] = []
    for piece in pieces:
        raw += translator.feed(piece)
    if finish:
        raw += translator.finish()
    return anthropic_events(raw)


def stream_of(answer: Answer) -> list[bytes]:
    return sse_events(stream_chunks(answer))


def json_message(answer: Answer) -> dict[str, Any]:
    return from_gemini_response(response_body(answer), model=MODEL, provider=PROVIDER, message_id=MESSAGE_ID)


def test_text_stream_becomes_anthropic_event_sequence() -> None:
    answer = Answer(parts=[text("Hel"), text("lo.")], usage=Usage(prompt=20, candidates=3, cached=5))
    events = translate(stream_of(answer))
    assert [e["type"] for e in events] == ["message_start", "content_block_start", "content_block_delta",
                                           "content_block_delta", "content_block_stop", "message_delta",
                                           "message_stop"]
    start = events[0]["message"]
    assert (start["id"], start["model"], start["provider"]) == (MESSAGE_ID, MODEL, PROVIDER)
    assert start["usage"]["input_tokens"] == 15 and start["usage"]["output_tokens"] == 0
    assert events[5]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[5]["usage"] == {"input_tokens": 15, "output_tokens": 3, "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 5}
    assert assemble_message(events).content[0].text == "Hello."


def test_thoughts_stream_as_thinking_with_a_signature_delta_then_the_call() -> None:
    answer = Answer(parts=[thought("Let me "), thought("check.", signature="U2lnMQ=="),
                           function_call("get_weather", {"city": "Paris"}, signature="Q2FsbA==")],
                    usage=Usage(candidates=7, thoughts=11))
    events = translate(stream_of(answer))
    deltas = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == ["thinking_delta", "thinking_delta", "signature_delta", "input_json_delta"]
    message = assemble_message(events)
    assert message.content[0].signature == "gemini:U2lnMQ=="
    assert (message.content[1].name, message.content[1].input) == ("get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 18
    assert message.model_dump(exclude_none=True)["content"] == json_message(answer)["content"]


def test_max_tokens_and_safety_stops() -> None:
    assert assemble_message(translate(stream_of(Answer(finish_reason="MAX_TOKENS")))).stop_reason == "max_tokens"
    assert assemble_message(translate(stream_of(Answer(finish_reason="SAFETY")))).stop_reason == "refusal"


def test_a_blocked_prompt_streams_an_empty_refusal() -> None:
    events = translate(stream_of(Answer(block_reason="SAFETY")))
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert events[1]["delta"]["stop_reason"] == "refusal"


def test_a_malformed_function_call_ends_the_stream_with_an_error_event() -> None:
    events = translate(stream_of(Answer(parts=[text("Calling")], finish_reason="MALFORMED_FUNCTION_CALL")))
    assert events[-2]["type"] == "content_block_stop"
    assert events[-1] == {"type": "error", "error": {"type": "api_error",
                                                      "message": "the model produced a malformed function call"}}


def test_a_stream_cut_before_its_finish_reason_ends_with_an_error_event() -> None:
    translator = GeminiStreamTranslator(model=MODEL, provider=PROVIDER, message_id=MESSAGE_ID)
    events = translate(stream_of(Answer(parts=[text("Par"), text("tial")], finish_reason=None)), translator=translator)
    assert events[-1]["type"] == "error" and "ended before" in events[-1]["error"]["message"]
    assert translator.failure is not None and not translator.finished
    usage = translator.close_usage()
    assert usage.input_tokens == 12  # the prompt count every chunk carries
    assert usage.estimated and usage.output_tokens == 0  # never reported: the relay's meter counts it


def test_an_error_written_mid_stream_as_plain_json_becomes_an_error_event() -> None:
    reply = stream_error_midway(Answer(parts=[text("a"), text("b")]),
                                {"code": 503, "message": "The model is overloaded. Please try again later.",
                                 "status": "UNAVAILABLE"})
    events = translate(reply.chunks)
    assert [e["type"] for e in events][-3:] == ["content_block_delta", "content_block_stop", "error"]
    assert events[-1]["error"] == {"type": "overloaded_error",
                                   "message": "The model is overloaded. Please try again later."}


def test_an_error_event_in_sse_form_becomes_an_error_event() -> None:
    error = b'data: {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}\r\n\r\n'
    events = translate([*stream_of(Answer(parts=[text("a"), text("b")]))[:1], error])
    assert events[-1]["error"] == {"type": "api_error", "message": "Internal error"}


def test_a_broken_connection_is_an_error_event_and_output_is_estimated_without_usage() -> None:
    translator = GeminiStreamTranslator(model=MODEL, provider=PROVIDER, message_id=MESSAGE_ID)
    chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": "x" * 40}]}, "index": 0}]}
    events = translate(sse_events([chunk]), finish=False, translator=translator)
    events += anthropic_events(translator.error("provider google broke off the stream"))
    assert events[-1]["type"] == "error"
    usage = translator.close_usage()
    assert usage.estimated and usage.output_tokens == 0  # never reported: the relay's meter counts it


def test_lf_only_line_ends_are_read_too() -> None:
    lf = [e.replace(b"\r\n", b"\n") for e in stream_of(Answer(parts=[text("Hi")]))]
    assert assemble_message(translate(lf)).content[0].text == "Hi"


# -- properties --------------------------------------------------------------------------------------

signatures = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9+/]{4,24}={0,2}", fullmatch=True))
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
parts = st.one_of(
    st.builds(lambda t, s: text(t, signature=s), words, signatures),
    st.builds(lambda t, s: thought(t, signature=s), words, signatures),
    st.builds(lambda n, a, s: function_call(n, a, signature=s), st.sampled_from(["get_weather", "run"]),
              # a Struct's numbers are doubles: integers beyond 2**53 never arrive
              st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(words, st.integers(-2**53, 2**53)),
                              max_size=3),
              signatures))
answers = st.builds(lambda p, f, u: Answer(parts=p, finish_reason=f, usage=u),
                    st.lists(parts, min_size=1, max_size=8),
                    st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY"]),
                    st.builds(Usage, st.integers(0, 10_000), st.integers(0, 5_000), st.integers(0, 500),
                              st.just(0)))


def rechunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answers, cuts=st.lists(st.integers(min_value=0), max_size=60))
def test_any_rechunking_gives_the_same_events_and_the_json_answers_message(answer: Answer, cuts: list[int]) -> None:
    data = b"".join(stream_of(answer))
    whole = translate([data])
    assert translate(rechunk(data, cuts)) == whole
    streamed = assemble_message(whole).model_dump(exclude_none=True)
    expected = json_message(answer)
    assert streamed["content"] == expected["content"]
    assert streamed["stop_reason"] == expected["stop_reason"]
    assert {k: streamed["usage"][k] for k in expected["usage"]} == expected["usage"]
    assert json.dumps(whole)  # every payload is plain JSON
