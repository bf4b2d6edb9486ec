"""Responses API answers and errors → Anthropic messages and error kinds, checked with the SDKs' own models."""
from __future__ import annotations

import json

import anthropic.types
import openai.types.responses
import pytest

from providers.openai_responses import (
    decode_signature,
    error_in_response,
    error_of_object,
    from_response,
    is_context_length_error,
    is_moderation_error,
    map_error,
)
from tests.fakes.openai_responses import (
    FunctionCall,
    Reasoning,
    Script,
    Text,
    Usage,
    content_flagged,
    context_window_exceeded,
    invalid_api_key,
    rate_limited,
    response_body,
    server_error,
    unknown_model,
)


def answer(script: Script) -> anthropic.types.Message:
    body = response_body(script)
    openai.types.responses.Response.model_validate(body)  # the fake answers what OpenAI answers
    message = from_response(body, model="openai/gpt-5.5-pro", provider="openai")
    assert message["model"] == "openai/gpt-5.5-pro" and message["provider"] == "openai"
    return anthropic.types.Message.model_validate(message)


def test_text_answer_becomes_a_text_block_ending_the_turn() -> None:
    message = answer(Script(items=[Text.of("Hello", " there")], id="resp_abc"))
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello there")]
    assert message.stop_reason == "end_turn" and message.id == "msg_resp_abc"


def test_each_output_text_part_is_its_own_text_block() -> None:
    message = answer(Script(items=[Text(parts=[["One."], ["Two."]])]))
    assert [b.text for b in message.content] == ["One.", "Two."]


def test_function_calls_become_tool_use_with_parsed_input() -> None:
    message = answer(Script(items=[Text.of("Checking."), FunctionCall("call_1", "get_weather", '{"city": "Paris"}'),
                                   FunctionCall("call_2", "get_time", "")]))
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert (message.content[1].id, message.content[1].name, message.content[1].input) == (
        "call_1", "get_weather", {"city": "Paris"})
    assert message.content[2].input == {}
    assert message.stop_reason == "tool_use"


def test_arguments_that_are_not_json_are_kept_as_text() -> None:
    message = answer(Script(items=[FunctionCall("call_1", "run", "print(1)")]))
    assert message.content[0].input == {"_raw_arguments": "print(1)"}


def test_reasoning_becomes_thinking_whose_signature_carries_the_encrypted_item() -> None:
    message = answer(Script(items=[Reasoning(summary=[["First."], ["Second."]], encrypted_content="gAAAAEnc", id="rs_7"),
                                   Text.of("Done.")]))
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "First.\n\nSecond."
    assert decode_signature(thinking.signature) == ("rs_7", "gAAAAEnc")


def test_reasoning_without_summary_still_carries_its_encrypted_item_and_empty_reasoning_is_skipped() -> None:
    message = answer(Script(items=[Reasoning(summary=[], encrypted_content="enc", id="rs_1"),
                                   Reasoning(summary=[], encrypted_content=None, id="rs_2"), Text.of("Hi")]))
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "" and decode_signature(message.content[0].signature) == ("rs_1", "enc")


def test_reasoning_summary_without_encrypted_content_has_an_empty_signature() -> None:
    message = answer(Script(items=[Reasoning(summary=[["Plan."]], encrypted_content=None), Text.of("Hi")]))
    assert (message.content[0].thinking, message.content[0].signature) == ("Plan.", "")


def test_incomplete_at_max_output_tokens_is_max_tokens() -> None:
    message = answer(Script(items=[Text.of("Cut sh")], status="incomplete", incomplete_reason="max_output_tokens"))
    assert message.stop_reason == "max_tokens"
    message = answer(Script(items=[FunctionCall("c", "f", '{"a": ')], status="incomplete"))
    assert message.stop_reason == "max_tokens"


def test_incomplete_by_content_filter_and_a_refusal_are_refusals() -> None:
    assert answer(Script(items=[Text.of("Par")], status="incomplete",
                         incomplete_reason="content_filter")).stop_reason == "refusal"
    message = answer(Script(items=[Text.of("I can't help with that.", refusal=True)]))
    assert message.stop_reason == "refusal" and message.content[0].text == "I can't help with that."


def test_usage_separates_cache_reads_and_writes_from_input() -> None:
    message = answer(Script(usage=Usage(input_tokens=1000, output_tokens=50, cached_tokens=600,
                                        cache_write_tokens=100, reasoning_tokens=20)))
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens, message.usage.output_tokens) == (300, 600, 100, 50)


def test_built_in_tool_items_are_skipped() -> None:
    body = response_body(Script(items=[Text.of("Hi")]))
    body["output"].insert(0, {"type": "web_search_call", "id": "ws_1", "status": "completed",
                              "action": {"type": "search", "query": "x"}})
    message = from_response(body, model="m", provider="openai")
    assert [b["type"] for b in message["content"]] == ["text"]


# -- errors --------------------------------------------------------------------------------------

def body_of(reply) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(reply.chunks)


def test_http_errors_map_to_anthropic_types_without_the_key() -> None:
    status, kind, message = map_error(401, body_of(invalid_api_key("sk-proj-secretsecretsecret123")))
    assert (status, kind) == (401, "authentication_error") and "secretsecret" not in message
    assert map_error(429, body_of(rate_limited()))[:2] == (429, "rate_limit_error")
    assert map_error(500, body_of(server_error()))[:2] == (502, "api_error")
    assert map_error(400, body_of(unknown_model("gpt-9")))[:2] == (400, "invalid_request_error")


def test_context_window_and_flagged_prompts_are_fallback_worthy() -> None:
    assert is_context_length_error(400, body_of(context_window_exceeded()))
    assert not is_moderation_error(400, body_of(context_window_exceeded()))
    assert is_moderation_error(400, body_of(content_flagged()))
    assert not is_context_length_error(400, body_of(unknown_model("x")))


@pytest.mark.parametrize(("code", "expected"), [
    ("server_error", (502, "api_error")), ("rate_limit_exceeded", (429, "rate_limit_error")),
    ("invalid_prompt", (400, "invalid_request_error")), ("invalid_base64_image", (400, "invalid_request_error")),
    ("image_too_large", (400, "invalid_request_error")), ("vector_store_timeout", (504, "timeout_error")),
    (None, (502, "api_error"))])
def test_failed_response_codes_map_to_anthropic_types(code: str | None, expected: tuple[int, str]) -> None:
    assert error_of_object({"code": code, "message": "went wrong"})[:2] == expected


def test_a_200_answer_that_failed_is_an_error_and_a_finished_one_is_not() -> None:
    failed = response_body(Script(status="failed", error={"code": "server_error",
                                                          "message": "Boom with key sk-abcdefghijklmnop"}))
    openai.types.responses.Response.model_validate(failed)
    status, kind, message = error_in_response(failed)
    assert (status, kind) == (502, "api_error") and "sk-abcdef" not in message and "[redacted]" in message
    assert error_in_response(response_body(Script())) is None
    assert error_in_response(response_body(Script(status="incomplete"))) is None
    assert error_in_response({**response_body(Script()), "status": "queued"})[:2] == (502, "api_error")


def test_an_error_body_that_is_not_json_still_maps() -> None:
    assert map_error(502, b"<html>Bad gateway</html>") == (502, "api_error", "the upstream answered HTTP 502")
    assert json.loads(body_of(server_error()))["error"]["type"] == "server_error"
