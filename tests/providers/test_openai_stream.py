"""Chat completion chunks → Anthropic stream events, as a client (the Anthropic SDK) would read them."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import openai.types.chat

from providers.openai_chat import ChatStreamTranslator
from tests.fakes.openai import (
    StreamScript,
    ToolCall,
    Usage,
    anthropic_events,
    assemble_message,
    sse_data,
    stream_chunks,
)


def run(chunks: Iterable[bytes], *, stop_sequences: tuple[str, ...] = (), finish: bool = True,
        translator: ChatStreamTranslator | None = None) -> list[dict[str, Any]]:
    translator = translator or ChatStreamTranslator(model="openai/gpt-5", provider="openai", message_id="msg_test",
                                                    stop_sequences=stop_sequences)
    raw: list[bytes] = []
    for chunk in chunks:
        raw += translator.feed(chunk)
    if finish:
        raw += translator.finish()
    return anthropic_events(raw)


def script_chunks(**fields: Any) -> list[bytes]:
    chunks = stream_chunks(StreamScript(**fields))
    for chunk in chunks:  # the fake sends what OpenAI sends
        if chunk != b"data: [DONE]\n\n" and b'"error"' not in chunk:
            openai.types.chat.ChatCompletionChunk.model_validate_json(chunk[6:])
    return chunks


def kinds(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for event in events:
        kind = event["type"]
        if kind == "content_block_start":
            kind += ":" + event["content_block"]["type"]
        elif kind == "content_block_delta":
            kind += ":" + event["delta"]["type"]
        out.append(kind)
    return out


def test_text_stream_follows_anthropics_event_sequence() -> None:
    events = run(script_chunks(text=["Hel", "lo", "!"], usage=Usage(prompt_tokens=20, completion_tokens=3)))
    assert kinds(events) == ["message_start", "content_block_start:text", "content_block_delta:text_delta",
                             "content_block_delta:text_delta", "content_block_delta:text_delta",
                             "content_block_stop", "message_delta", "message_stop"]
    message = assemble_message(events)
    assert message.content[0].text == "Hello!"
    assert message.model == "openai/gpt-5" and message.id == "msg_test"
    assert events[0]["message"]["provider"] == "openai"
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 20, 3)


def test_message_start_counts_input_as_zero_until_usage_arrives() -> None:
    events = run(script_chunks(text=["Hi"], usage=Usage(prompt_tokens=20, completion_tokens=1)))
    assert events[0]["message"]["usage"]["input_tokens"] == 0
    assert events[-2]["usage"]["input_tokens"] == 20


def test_message_start_carries_input_tokens_a_server_sends_early() -> None:
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
             "usage": {"prompt_tokens": 33, "completion_tokens": 0, "total_tokens": 33}}
    events = run([sse_data(first), *script_chunks(text=["Hi"])[1:]])
    assert events[0]["message"]["usage"]["input_tokens"] == 33


def test_reasoning_then_text_are_two_blocks_the_first_closing_when_the_second_starts() -> None:
    events = run(script_chunks(reasoning=["Think", "ing"], text=["Done"]))
    assert kinds(events)[1:8] == ["content_block_start:thinking", "content_block_delta:thinking_delta",
                                  "content_block_delta:thinking_delta", "content_block_stop",
                                  "content_block_start:text", "content_block_delta:text_delta", "content_block_stop"]
    message = assemble_message(events)
    assert message.content[0].thinking == "Thinking" and message.content[0].signature == ""
    assert message.content[1].text == "Done"


def test_reasoning_field_named_reasoning_is_read_too() -> None:
    message = assemble_message(run(script_chunks(reasoning=["hmm"], reasoning_field="reasoning", text=["ok"])))
    assert message.content[0].thinking == "hmm"


def test_parallel_tool_calls_become_tool_use_blocks_by_index_with_fragments_as_they_came() -> None:
    events = run(script_chunks(text=["Checking."], finish_reason="tool_calls", tool_calls=[
        ToolCall("call_a", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}']),
        ToolCall("call_b", "get_time", ['{"tz": ', '"CET"}'])]))
    fragments = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
                 and e["delta"]["type"] == "input_json_delta"]
    assert fragments == ['{"ci', 'ty": "Pa', 'ris"}', '{"tz": ', '"CET"}']
    message = assemble_message(events)
    assert [(b.type, getattr(b, "id", None)) for b in message.content] == [
        ("text", None), ("tool_use", "call_a"), ("tool_use", "call_b")]
    assert message.content[1].input == {"city": "Paris"} and message.content[2].input == {"tz": "CET"}
    assert message.stop_reason == "tool_use"


def test_tool_call_without_id_or_index_gets_a_derived_id() -> None:
    call = {"function": {"name": "f", "arguments": '{"a":1}'}}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
    done = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    message = assemble_message(run([sse_data(chunk), sse_data(done), b"data: [DONE]\n\n"]))
    assert message.content[0].id.startswith("toolu_") and message.content[0].input == {"a": 1}


def test_arguments_before_the_name_are_held_until_the_block_can_start() -> None:
    def chunk(call: dict[str, Any], finish: str | None = None) -> bytes:
        delta = {"tool_calls": [call]} if call else {}
        return sse_data({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    message = assemble_message(run([chunk({"index": 0, "id": "call_x", "function": {"arguments": '{"a"'}}),
                                    chunk({"index": 0, "function": {"name": "f", "arguments": ":1}"}}),
                                    chunk({}, "tool_calls")]))
    assert (message.content[0].name, message.content[0].input) == ("f", {"a": 1})


def test_keep_alive_comments_crlf_and_bare_cr_are_understood() -> None:
    body = b"".join(script_chunks(text=["a", "b"]))
    crlf = b": keep-alive\r\n\r\n" + body.replace(b"\n", b"\r\n")
    bare_cr = b": ping\r\r" + body.replace(b"\n", b"\r")
    expected = run([body])
    assert run([crlf]) == expected and run([bare_cr]) == expected


def test_events_without_blank_lines_between_them_are_each_read() -> None:
    body = b"".join(script_chunks(text=["a", "b"])).replace(b"\n\n", b"\n")
    assert assemble_message(run([body])).content[0].text == "ab"


def test_done_completes_the_message_without_waiting_for_the_end_of_the_body() -> None:
    translator = ChatStreamTranslator(model="m", provider="p", message_id="msg_1")
    events = anthropic_events(translator.feed(b"".join(script_chunks(text=["Hi"]))))
    assert events[-1]["type"] == "message_stop" and translator.finished
    assert translator.finish() == [] and translator.feed(b"data: {}\n\n") == []


def test_end_of_body_after_finish_reason_completes_normally_without_done() -> None:
    events = run(script_chunks(text=["Hi"], done=False))
    assert kinds(events)[-2:] == ["message_delta", "message_stop"]


def test_last_line_without_newline_is_still_read_at_the_end() -> None:
    body = b"".join(script_chunks(text=["Hi"], done=False)).rstrip(b"\n")
    events = run([body])
    assert events[-2]["usage"]["output_tokens"] == 5


def test_end_of_body_without_finish_reason_is_an_error_after_closing_the_block() -> None:
    translator = ChatStreamTranslator(model="m", provider="p", message_id="msg_1")
    events = run(script_chunks(text=["Hal"], finish_reason=None), translator=translator)
    assert kinds(events) == ["message_start", "content_block_start:text", "content_block_delta:text_delta",
                             "content_block_stop", "error"]
    assert events[-1]["error"]["type"] == "api_error"
    assert translator.stop_reason is None and translator.failure is not None and not translator.finished


def test_upstream_error_object_mid_stream_becomes_an_error_event() -> None:
    events = run(script_chunks(text=["Hal"], error={"message": "Rate limit reached for requests",
                                                    "type": "requests", "code": "rate_limit_exceeded"}))
    assert kinds(events)[-2:] == ["content_block_stop", "error"]
    assert events[-1]["error"] == {"type": "rate_limit_error", "message": "Rate limit reached for requests"}


def test_error_object_as_the_first_event_emits_only_the_error() -> None:
    events = run([sse_data({"error": {"message": "The server is overloaded", "type": "server_error", "code": 503}})])
    assert events == [{"type": "error", "error": {"type": "overloaded_error", "message": "The server is overloaded"}}]


def test_error_in_the_stream_never_leaks_a_key() -> None:
    events = run([sse_data({"error": {"message": "bad key sk-proj-AAAAbbbbCCCCdddd1234", "code": 401}})])
    assert "sk-proj" not in json.dumps(events) and events[0]["error"]["type"] == "authentication_error"


def test_unreadable_event_is_an_error() -> None:
    events = run([b"data: {\"choices\": [\n\n"])
    assert events[-1]["type"] == "error"


def test_error_for_a_broken_connection_closes_nothing_else_and_ends_the_stream() -> None:
    translator = ChatStreamTranslator(model="m", provider="p", message_id="msg_1")
    translator.feed(script_chunks(text=["Hal"])[0] + script_chunks(text=["Hal"])[1])
    events = anthropic_events(translator.error("upstream connection lost"))
    assert events == [{"type": "error", "error": {"type": "api_error", "message": "upstream connection lost"}}]
    assert translator.finish() == [] and translator.feed(b"data: [DONE]\n\n") == []


def test_multibyte_characters_split_across_feeds_arrive_whole() -> None:
    body = b"".join(script_chunks(text=["Grüße 👋🏽 日本"]))
    cut = body.index("👋".encode()) + 2
    assert assemble_message(run([body[:cut], body[cut:]])).content[0].text == "Grüße 👋🏽 日本"


def test_arguments_split_inside_a_unicode_escape_reassemble() -> None:
    arguments = json.dumps({"city": "München"}, ensure_ascii=True)  # {"city": "M\u00fcnchen"}
    split = arguments.index("\\u00") + 3
    message = assemble_message(run(script_chunks(finish_reason="tool_calls", ascii_only=True, tool_calls=[
        ToolCall("call_a", "get_weather", [arguments[:split], arguments[split:]])])))
    assert message.content[0].input == {"city": "München"}


def test_stop_sequence_named_by_the_upstream_is_reported() -> None:
    events = run(script_chunks(text=["4"], choice_extra={"stop_reason": "###"}), stop_sequences=("###",))
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def test_stop_sequence_at_the_end_of_the_text_is_reported_across_deltas() -> None:
    events = run(script_chunks(text=["4 E", "N", "D"]), stop_sequences=("END", "x"))
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_length_is_max_tokens_and_content_filter_is_refusal() -> None:
    assert run(script_chunks(text=["a"], finish_reason="length"))[-2]["delta"]["stop_reason"] == "max_tokens"
    assert run(script_chunks(text=["a"], finish_reason="content_filter"))[-2]["delta"]["stop_reason"] == "refusal"


def test_usage_attribute_and_stop_reason_follow_the_stream() -> None:
    translator = ChatStreamTranslator(model="m", provider="p", message_id="msg_1")
    run(script_chunks(text=["Hi"], usage=Usage(prompt_tokens=100, completion_tokens=7, cached_tokens=60)),
        translator=translator)
    assert translator.usage == {"input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 60}
    assert translator.stop_reason == "end_turn"
    assert not translator.close_usage().estimated


def test_a_stream_without_usage_is_flagged_estimated_for_the_relays_meter() -> None:
    # The relay's meter counts the output from the deltas sent (tests/gateway/test_stream_meter.py).
    translator = ChatStreamTranslator(model="m", provider="p", message_id="msg_1")
    run(script_chunks(text=["x" * 40], usage=None), translator=translator)
    usage = translator.close_usage()
    assert usage.estimated and usage.output_tokens == 0


def test_finish_reason_error_without_an_error_object_is_an_error() -> None:
    events = run(script_chunks(text=["Hal"], finish_reason="error"))
    assert kinds(events)[-2:] == ["content_block_stop", "error"]


def test_openrouter_mid_stream_error_chunk_maps_its_status() -> None:
    error = {"code": 429, "message": "Rate limit exceeded", "metadata": {"error_type": "rate_limit_exceeded"}}
    chunk = {"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": "openai/gpt-4o",
             "provider": "OpenAI", "error": error,
             "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}
    events = run([*script_chunks(text=["Hal"])[:2], sse_data(chunk)])
    assert events[-1]["error"] == {"type": "rate_limit_error", "message": "Rate limit exceeded"}
