"""Chat completion → Anthropic Message, each checked with the official SDK models on both sides."""
from __future__ import annotations

from typing import Any

import anthropic.types
import openai.types.chat
import pytest

from providers.openai_chat import RAW_ARGUMENTS_KEY, from_chat_response
from tests.fakes.openai import ToolCall, Usage, completion_body


def translate(response: dict[str, Any], stop_sequences: tuple[str, ...] = ()) -> dict[str, Any]:
    openai.types.chat.ChatCompletion.model_validate(response)  # what we read is what OpenAI sends
    message = from_chat_response(response, model="openai/gpt-5", provider="openai", stop_sequences=stop_sequences)
    anthropic.types.Message.model_validate(message)
    return message


def test_text_answer_becomes_an_anthropic_message_with_router_model_and_provider() -> None:
    usage = Usage(prompt_tokens=12, completion_tokens=3)
    message = translate(completion_body("Hello!", id="chatcmpl-abc", usage=usage))
    assert message == {
        "id": "msg_chatcmpl-abc", "type": "message", "role": "assistant", "model": "openai/gpt-5",
        "provider": "openai", "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 3,
                                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_a_thinking_block_before_the_text(field: str) -> None:
    message = translate(completion_body("42", reasoning="6 times 7", reasoning_field=field))
    assert message["content"] == [{"type": "thinking", "thinking": "6 times 7", "signature": ""},
                                  {"type": "text", "text": "42"}]


def test_tool_calls_become_tool_use_blocks_with_parsed_input_and_ids_kept() -> None:
    message = translate(completion_body(None, finish_reason="tool_calls", tool_calls=[
        ToolCall("call_a", "get_weather", '{"city":"Paris"}'), ToolCall("call_b", "get_weather", '{"city":"Rome"}')]))
    assert message["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}}]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("arguments", "expected"), [
    ("", {}),
    ('{"city": "Paris"', {RAW_ARGUMENTS_KEY: '{"city": "Paris"'}),
    ('["not", "an", "object"]', {RAW_ARGUMENTS_KEY: '["not", "an", "object"]'}),
])
def test_arguments_that_are_not_a_json_object_are_kept_raw(arguments: str, expected: dict[str, Any]) -> None:
    calls = [ToolCall("call_a", "f", arguments)]
    message = translate(completion_body(None, finish_reason="tool_calls", tool_calls=calls))
    assert message["content"][0]["input"] == expected


def test_a_tool_call_without_id_gets_a_stable_toolu_id() -> None:
    calls = [ToolCall("", "f", "{}"), ToolCall("", "f", "{}")]
    body = completion_body(None, finish_reason="tool_calls", tool_calls=calls)
    first, second = (block["id"] for block in translate(body)["content"])
    assert first.startswith("toolu_") and second.startswith("toolu_") and first != second
    assert [b["id"] for b in translate(body)["content"]] == [first, second]


def test_a_response_without_id_gets_a_stable_msg_id() -> None:
    body = completion_body("Hi")
    del body["id"]
    message = from_chat_response(body, model="m", provider="p")
    assert message["id"].startswith("msg_") and message["id"] == from_chat_response(body, model="m", provider="p")["id"]


@pytest.mark.parametrize(("finish_reason", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("function_call", "tool_use"),
    ("content_filter", "refusal"), ("something_new", "end_turn")])
def test_finish_reason_maps_to_stop_reason(finish_reason: str, stop_reason: str) -> None:
    body = completion_body("x")
    body["choices"][0]["finish_reason"] = finish_reason  # past the SDK's enum on purpose for unknown ones
    assert from_chat_response(body, model="m", provider="p")["stop_reason"] == stop_reason


def test_stop_after_tool_calls_is_tool_use() -> None:
    message = translate(completion_body(None, finish_reason="stop", tool_calls=[ToolCall("call_a", "f", "{}")]))
    assert message["stop_reason"] == "tool_use"


def test_stop_sequence_named_by_the_upstream_is_reported() -> None:
    body = completion_body("The answer is 4", choice_extra={"stop_reason": "###"})  # vLLM names the match
    message = translate(body, stop_sequences=("###", "END"))
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "###")


def test_stop_sequence_left_at_the_end_of_the_text_is_reported() -> None:
    message = translate(completion_body("The answer is 4END"), stop_sequences=("###", "END"))
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


def test_stop_that_names_no_requested_sequence_is_end_turn() -> None:
    body = completion_body("The answer is 4", choice_extra={"stop_reason": 151643})  # vLLM: an EOS token id
    message = translate(body, stop_sequences=("###",))
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)


def test_refusal_becomes_text_with_stop_reason_refusal() -> None:
    message = translate(completion_body(None, refusal="I can't help with that."))
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


def test_cached_prompt_tokens_are_cache_reads_and_the_rest_input() -> None:
    body = completion_body("x", usage=Usage(prompt_tokens=1000, completion_tokens=50, cached_tokens=768))
    usage = translate(body)["usage"]
    assert usage == {"input_tokens": 232, "output_tokens": 50, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 768}


def test_deepseek_cache_hit_tokens_are_cache_reads() -> None:
    body = completion_body("x")
    body["usage"] = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                     "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}
    assert translate(body)["usage"]["cache_read_input_tokens"] == 64
    assert translate(body)["usage"]["input_tokens"] == 36


def test_missing_usage_counts_zero() -> None:
    body = completion_body("x")
    del body["usage"]
    assert translate(body)["usage"] == {"input_tokens": 0, "output_tokens": 0,
                                        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def test_empty_answer_has_no_blocks() -> None:
    message = translate(completion_body("", finish_reason="length"))
    assert message["content"] == [] and message["stop_reason"] == "max_tokens"
