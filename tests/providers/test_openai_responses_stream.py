"""Responses stream events → Anthropic stream events, as a client (the Anthropic SDK) reads them; and the
property that any re-chunking of the upstream bytes yields the same events and the JSON answer's message."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import anthropic.types
import openai.types.responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from providers.openai_responses import (
    ResponsesStreamTranslator,
    decode_signature,
    from_response,
)
from tests.fakes.openai import anthropic_events, assemble_message
from tests.fakes.openai_responses import (
    FunctionCall,
    Reasoning,
    Script,
    Text,
    Usage,
    response_body,
    sse_event,
    stream_events,
    stream_payloads,
)
from tests.providers.test_openai_stream import kinds

SETTINGS = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
OPENAI_EVENT: TypeAdapter[Any] = TypeAdapter(openai.types.responses.ResponseStreamEvent)


def new_translator() -> ResponsesStreamTranslator:
    return ResponsesStreamTranslator(model="openai/gpt-5.5-pro", provider="openai", message_id="msg_test")


def run(chunks: Iterable[bytes], *, translator: ResponsesStreamTranslator | None = None,
        finish: bool = True) -> list[dict[str, Any]]:
    translator = translator or new_translator()
    raw: list[bytes] = []
    for chunk in chunks:
        raw += translator.feed(chunk)
    if finish:
        raw += translator.finish()
    return anthropic_events(raw)


def script_events(script: Script) -> list[bytes]:
    for payload in stream_payloads(script):  # the fake sends what OpenAI sends
        OPENAI_EVENT.validate_python(payload)
    return stream_events(script)


def test_text_stream_follows_anthropics_event_sequence() -> None:
    events = run(script_events(Script(items=[Text.of("Hel", "lo", "!")], usage=Usage(input_tokens=20, output_tokens=3))))
    assert kinds(events) == ["message_start", "content_block_start:text", "content_block_delta:text_delta",
                             "content_block_delta:text_delta", "content_block_delta:text_delta",
                             "content_block_stop", "message_delta", "message_stop"]
    message = assemble_message(events)
    assert message.content[0].text == "Hello!" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 3)
    assert events[0]["message"]["provider"] == "openai" and events[0]["message"]["id"] == "msg_test"


def test_reasoning_streams_as_thinking_then_a_signature_carrying_the_encrypted_item() -> None:
    events = run(script_events(Script(items=[
        Reasoning(summary=[["Look ", "it up."], ["Then answer."]], encrypted_content="gAAAAEnc", id="rs_9"),
        FunctionCall("call_1", "get_weather", ['{"city"', ': "Paris"}'])])))
    assert kinds(events) == [
        "message_start", "content_block_start:thinking", "content_block_delta:thinking_delta",
        "content_block_delta:thinking_delta", "content_block_delta:thinking_delta",
        "content_block_delta:signature_delta", "content_block_stop", "content_block_start:tool_use",
        "content_block_delta:input_json_delta", "content_block_delta:input_json_delta", "content_block_stop",
        "message_delta", "message_stop"]
    message = assemble_message(events)
    assert message.content[0].thinking == "Look it up.\n\nThen answer."
    assert decode_signature(message.content[0].signature) == ("rs_9", "gAAAAEnc")
    assert (message.content[1].id, message.content[1].input) == ("call_1", {"city": "Paris"})
    assert message.stop_reason == "tool_use"


def test_incomplete_stream_stops_at_max_tokens() -> None:
    events = run(script_events(Script(items=[Text.of("Cut")], status="incomplete")))
    assert events[-2]["delta"]["stop_reason"] == "max_tokens" and events[-1]["type"] == "message_stop"


def test_a_failed_response_ends_the_stream_with_an_error_event() -> None:
    translator = new_translator()
    events = run(script_events(Script(items=[Text.of("Half")], status="failed",
                                      error={"code": "rate_limit_exceeded", "message": "Slow down"})),
                 translator=translator)
    assert kinds(events) == ["message_start", "content_block_start:text", "content_block_delta:text_delta",
                             "content_block_stop", "error"]
    assert events[-1]["error"] == {"type": "rate_limit_error", "message": "Slow down"}
    assert translator.failure == ("rate_limit_error", "Slow down") and not translator.finished
    assert "message_stop" not in kinds(events)


def test_an_error_event_ends_the_stream_with_an_anthropic_error() -> None:
    events = run(script_events(Script(items=[Text.of("Hi")], error_event={
        "code": "server_error", "message": "An error occurred; key sk-abcdefghijklmnopq"})))
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "api_error"
    assert "sk-abcdef" not in events[-1]["error"]["message"]


def test_an_error_event_with_a_nested_error_object_is_read_too() -> None:
    events = run([sse_event({"type": "error", "sequence_number": 0, "error": {
        "type": "invalid_request_error", "code": "rate_limit_exceeded", "message": "Too many", "param": None}})])
    assert events[-1]["error"] == {"type": "rate_limit_error", "message": "Too many"}


def test_a_stream_that_stops_before_the_response_ends_is_an_error_and_usage_is_estimated() -> None:
    translator = new_translator()
    events = run(script_events(Script(items=[Text.of("x" * 40)], end=False)), translator=translator)
    assert events[-1]["type"] == "error" and "ended before" in events[-1]["error"]["message"]
    usage = translator.close_usage()
    assert usage.estimated and usage.output_tokens == 0  # never reported: the relay's meter counts it


def test_undecodable_data_is_an_error() -> None:
    events = run([b"event: response.created\ndata: {not json\n\n"])
    assert kinds(events) == ["error"]


def test_done_events_fill_in_text_the_deltas_skipped() -> None:
    payloads = [p for p in stream_payloads(Script(items=[Text.of("Hello", " world"), FunctionCall("c", "f", ["{", "}"])]))
                if p["type"] not in ("response.output_text.delta", "response.function_call_arguments.delta")]
    message = assemble_message(run([sse_event(p) for p in payloads]))
    assert message.content[0].text == "Hello world" and message.content[1].input == {}


def test_a_broken_connection_gives_one_error_event_and_nothing_after() -> None:
    translator = new_translator()
    raw = translator.feed(b"".join(script_events(Script(items=[Text.of("Hi")], end=False))))
    raw += translator.error("upstream connection lost", "api_error")
    assert translator.finish() == [] and translator.feed(b"data: {}\n\n") == []
    assert kinds(anthropic_events(raw))[-1] == "error"


def test_unknown_events_and_comments_are_ignored() -> None:
    body = b": keep-alive\n\n" + sse_event({"type": "response.queued", "sequence_number": 0}) + b"".join(
        script_events(Script(items=[Text.of("Hi")])))
    assert assemble_message(run([body])).content[0].text == "Hi"


# -- properties ----------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
deltas = st.lists(text, min_size=1, max_size=4)
tool_inputs = st.dictionaries(st.text(min_size=1, max_size=6), st.one_of(text, st.integers(), st.booleans()),
                              max_size=3)


@st.composite
def items(draw: st.DrawFn) -> list[Any]:
    out: list[Any] = []
    for position in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["text", "refusal", "call", "reasoning"]))
        if kind in ("text", "refusal"):
            out.append(Text(parts=draw(st.lists(deltas, min_size=1, max_size=2)), id=f"msg_{position}",
                            refusal=kind == "refusal"))
        elif kind == "call":
            arguments = json.dumps(draw(tool_inputs), ensure_ascii=draw(st.booleans()))
            cuts = sorted(draw(st.sets(st.integers(1, max(len(arguments) - 1, 1)), max_size=4)))
            fragments = [arguments[a:b] for a, b in zip([0, *cuts], [*cuts, len(arguments)], strict=True)
                         if arguments[a:b]]
            out.append(FunctionCall(f"call_{position}", draw(st.sampled_from(["f", "g"])), fragments))
        else:
            out.append(Reasoning(summary=draw(st.lists(deltas, max_size=3)), id=f"rs_{position}",
                                 encrypted_content=draw(st.one_of(st.none(), st.from_regex(r"gAAAA[A-Za-z0-9+/=]{1,30}",
                                                                                          fullmatch=True)))))
    return out


scripts = st.builds(
    Script, items=items(), status=st.sampled_from(["completed", "incomplete"]),
    incomplete_reason=st.sampled_from(["max_output_tokens", "content_filter"]),
    usage=st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**5), st.integers(0, 1000)))


@SETTINGS
@given(script=scripts, data=st.data())
def test_any_rechunking_of_a_stream_yields_the_same_events_and_the_json_answers_message(
        script: Script, data: st.DataObject) -> None:
    body = b"".join(stream_events(script))
    if data.draw(st.booleans(), label="crlf"):
        body = body.replace(b"\n", b"\r\n")
    if data.draw(st.booleans(), label="one byte at a time"):
        pieces = [body[i:i + 1] for i in range(len(body))]
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=40), label="cuts"))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    whole = run([body])
    assert run(pieces) == whole
    streamed = assemble_message(whole)
    answered = anthropic.types.Message.model_validate(
        from_response(response_body(script), model="openai/gpt-5.5-pro", provider="openai", message_id="msg_test"))
    assert streamed.model_dump() == answered.model_dump()
