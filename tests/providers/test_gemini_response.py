"""Gemini GenerateContentResponse → Anthropic Message: blocks, stop reasons, usage, failed answers."""
from __future__ import annotations

from typing import Any

import anthropic.types
import pytest

from providers.gemini import error_in_response, from_gemini_response
from tests.fakes.gemini import Answer, Usage, function_call, response_body, text, thought


def message_of(answer: Answer, **kwargs: Any) -> dict[str, Any]:
    message = from_gemini_response(response_body(answer), model="google/gemini-3.5-flash", provider="google",
                                   **kwargs)
    anthropic.types.Message.model_validate(message)  # what a client's SDK reads
    return message


def test_text_answer_becomes_one_text_block_ending_the_turn() -> None:
    message = message_of(Answer(parts=[text("Hello, "), text("world.", signature="c2ln")]))
    assert message["id"] == "msg_fAkE0rEsPoNsE1d"
    assert message["model"] == "google/gemini-3.5-flash" and message["provider"] == "google"
    assert message["content"] == [{"type": "text", "text": "Hello, world."}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None


def test_thoughts_become_a_thinking_block_sealed_by_its_signature() -> None:
    message = message_of(Answer(parts=[thought("First, "), thought("then.", signature="U2ln"), thought("Later."),
                                       text("Done.")]))
    assert message["content"] == [
        {"type": "thinking", "thinking": "First, then.", "signature": "gemini:U2ln"},
        {"type": "thinking", "thinking": "Later.", "signature": ""},
        {"type": "text", "text": "Done."}]


def test_function_calls_become_tool_use_blocks_and_stop_for_tool_use() -> None:
    message = message_of(Answer(parts=[text("Checking."), function_call("get_weather", {"city": "Paris"}),
                                       function_call("get_time", {"tz": "CET"})]), message_id="msg_given")
    assert message["id"] == "msg_given"
    calls = message["content"][1:]
    assert [(c["type"], c["name"], c["input"]) for c in calls] == [
        ("tool_use", "get_weather", {"city": "Paris"}), ("tool_use", "get_time", {"tz": "CET"})]
    assert len({c["id"] for c in calls}) == 2 and all(c["id"].startswith("toolu_") for c in calls)
    assert message["stop_reason"] == "tool_use"
    again = message_of(Answer(parts=[text("Checking."), function_call("get_weather", {"city": "Paris"}),
                                     function_call("get_time", {"tz": "CET"})]), message_id="msg_given")
    assert again["content"] == message["content"]  # ids are derived, not random


def test_usage_counts_cached_prompt_tokens_as_cache_reads_and_thoughts_as_output() -> None:
    message = message_of(Answer(usage=Usage(prompt=1000, candidates=50, thoughts=200, cached=600)))
    assert message["usage"] == {"input_tokens": 400, "output_tokens": 250, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 600}


@pytest.mark.parametrize(("finish", "stop_reason"), [
    ("STOP", "end_turn"), ("MAX_TOKENS", "max_tokens"), ("SAFETY", "refusal"), ("RECITATION", "refusal"),
    ("PROHIBITED_CONTENT", "refusal"), ("BLOCKLIST", "refusal"), ("SPII", "refusal"), ("OTHER", "end_turn"),
    ("FINISH_REASON_UNSPECIFIED", "end_turn"), ("SOMETHING_NEW", "end_turn")])
def test_finish_reason_becomes_anthropic_stop_reason(finish: str, stop_reason: str) -> None:
    answer = Answer(parts=[text("Partial")], finish_reason=finish)
    assert error_in_response(response_body(answer)) is None
    assert message_of(answer)["stop_reason"] == stop_reason


def test_a_blocked_prompt_is_an_empty_refusal() -> None:
    message = message_of(Answer(block_reason="PROHIBITED_CONTENT", usage=Usage(prompt=9, candidates=0)))
    assert message["content"] == [] and message["stop_reason"] == "refusal"
    assert message["usage"]["input_tokens"] == 9


@pytest.mark.parametrize(("finish", "status", "error_type"), [
    ("MALFORMED_FUNCTION_CALL", 502, "api_error"), ("UNEXPECTED_TOOL_CALL", 502, "api_error"),
    ("MALFORMED_RESPONSE", 502, "api_error"), ("MISSING_THOUGHT_SIGNATURE", 400, "invalid_request_error")])
def test_a_finish_reason_that_leaves_no_usable_answer_is_an_error(finish: str, status: int, error_type: str) -> None:
    failure = error_in_response(response_body(Answer(parts=[], finish_reason=finish,
                                                     finish_message="Malformed function call: print(")))
    assert failure is not None and failure[:2] == (status, error_type)


def test_an_error_object_in_a_200_answer_is_mapped() -> None:
    failure = error_in_response({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}})
    assert failure == (429, "rate_limit_error", "Quota exceeded")


def test_an_answer_without_candidates_or_a_block_reason_is_unreadable() -> None:
    assert error_in_response({"usageMetadata": {"promptTokenCount": 3}}) == (
        502, "api_error", "the upstream answered without a candidate")
    assert error_in_response(response_body(Answer(block_reason="SAFETY"))) is None
