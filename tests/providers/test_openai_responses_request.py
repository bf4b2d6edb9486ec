"""Anthropic request → Responses API request: one behaviour per test, every request checked against
CreateResponse (extracted from OpenAI's OpenAPI spec into tests/data)."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.openai_responses import (
    DEFAULT_SUPPORTED,
    SIGNATURE_PREFIX,
    ResponsesOptions,
    UnsupportedParameters,
    decode_signature,
    encode_signature,
    from_response,
    responses_url,
    to_responses_request,
)
from tests.fakes.openai_responses import (
    FunctionCall,
    Reasoning,
    Script,
    Text,
    response_body,
    responses_request_errors,
    responses_request_fields,
)
from tests.providers.test_openai_properties import requests as any_request

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def translate(body: dict[str, Any], *, stream: bool = False, **options: Any) -> tuple[dict[str, Any], list[str]]:
    full = {"model": "openai/gpt-5.5-pro", "max_tokens": 256, **body}
    full.setdefault("messages", [{"role": "user", "content": "Hi"}])
    request, dropped = to_responses_request(full, upstream_model="gpt-5.5-pro", options=ResponsesOptions(**options),
                                            stream=stream)
    assert responses_request_errors(request) == []
    assert set(request) <= responses_request_fields()
    return request, dropped


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(id: str, input: Any = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": "get_weather", "input": input if input is not None else {"city": "Paris"}}


def tool_result(id: str, content: Any = "18°C", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id, "content": content, **extra}


# -- the schema check itself ---------------------------------------------------------------------

def test_the_schema_check_refuses_what_the_api_refuses() -> None:
    good = {"model": "gpt-5", "input": [{"type": "message", "role": "user",
                                         "content": [{"type": "input_text", "text": "Hi"}]}]}
    assert responses_request_errors(good) == []
    assert responses_request_errors({**good, "input": [{"type": "message", "role": "human", "content": "Hi"}]})
    assert responses_request_errors({**good, "max_output_tokens": 8})
    assert responses_request_errors({**good, "input": [{"type": "reasoning", "summary": [], "encrypted_content": "x"}]})
    assert responses_request_errors({**good, "tools": [{"type": "function", "name": "f"}]})  # strict, parameters


# -- basics --------------------------------------------------------------------------------------

def test_a_plain_request_is_a_stateless_responses_request() -> None:
    request, dropped = translate({"messages": [{"role": "user", "content": "Hello"}]})
    assert request == {"model": "gpt-5.5-pro",
                       "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
                       "max_output_tokens": 256, "store": False}
    assert dropped == []


def test_thinking_asks_for_the_encrypted_reasoning_to_carry_it_statelessly() -> None:
    request, _ = translate({"thinking": {"type": "enabled", "budget_tokens": 2048}})
    assert request["store"] is False and request["include"] == ["reasoning.encrypted_content"]
    for no_thinking in ({}, {"thinking": {"type": "disabled"}}, {"output_config": {"effort": "high"}}):
        request, _ = translate(no_thinking)
        assert "include" not in request and "summary" not in request.get("reasoning", {})


def test_stream_is_set_by_the_caller_not_the_body() -> None:
    assert translate({}, stream=True)[0]["stream"] is True
    assert "stream" not in translate({"stream": True})[0]


def test_system_becomes_instructions() -> None:
    assert translate({"system": "Be brief."})[0]["instructions"] == "Be brief."
    blocks = [{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Two."}]
    request, dropped = translate({"system": blocks})
    assert request["instructions"] == "One.\n\nTwo." and dropped == []
    assert not any(item.get("role") == "system" for item in request["input"])


def test_max_tokens_becomes_max_output_tokens_at_least_the_apis_minimum() -> None:
    assert translate({"max_tokens": 4000})[0]["max_output_tokens"] == 4000
    assert translate({"max_tokens": 5})[0]["max_output_tokens"] == 16


def test_temperature_and_top_p_pass_where_supported_and_are_reported_elsewhere() -> None:
    request, dropped = translate({"temperature": 0.2, "top_p": 0.9})
    assert (request["temperature"], request["top_p"], dropped) == (0.2, 0.9, [])
    request, dropped = translate({"temperature": 0.2, "top_p": 0.9}, supported=DEFAULT_SUPPORTED - {"temperature", "top_p"})
    assert "temperature" not in request and "top_p" not in request
    assert dropped == ["temperature", "top_p"]


def test_top_k_and_stop_sequences_have_no_equivalent_and_are_reported() -> None:
    request, dropped = translate({"top_k": 40, "stop_sequences": ["END"]})
    assert dropped == ["top_k", "stop_sequences"]
    assert "stop" not in request and "top_k" not in request


def test_unknown_fields_are_reported_and_router_fields_ignored() -> None:
    request, dropped = translate({"mystery": 1, "provider": {"order": ["openai"]}, "session_id": "s1",
                                  "service_tier": "auto"})
    assert dropped == ["mystery"] and "mystery" not in request


def test_user_id_becomes_safety_identifier_hashed_when_too_long() -> None:
    assert translate({"metadata": {"user_id": "user-42"}})[0]["safety_identifier"] == "user-42"
    long_id = "u" * 100
    assert translate({"metadata": {"user_id": long_id}})[0]["safety_identifier"] == \
        hashlib.sha256(long_id.encode()).hexdigest()


def test_required_parameters_raise_instead_of_dropping() -> None:
    with pytest.raises(UnsupportedParameters) as raised:
        translate({"top_k": 5}, require_parameters=True)
    assert raised.value.parameters == ("top_k",)


def test_responses_url_appends_to_the_versioned_base() -> None:
    assert responses_url("https://api.openai.com/v1/") == "https://api.openai.com/v1/responses"


# -- content -------------------------------------------------------------------------------------

def test_images_become_input_image_parts() -> None:
    request, dropped = translate({"messages": [user(
        text("What is this?"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}})]})
    assert request["input"][0]["content"] == [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"}]
    assert dropped == []


def test_images_from_the_files_api_or_unsupported_are_dropped_and_reported() -> None:
    request, dropped = translate({"messages": [user(text("Hi"), {"type": "image", "source": {"type": "file",
                                                                                              "file_id": "file_1"}})]})
    assert request["input"][0]["content"] == [{"type": "input_text", "text": "Hi"}] and dropped == ["images"]
    _, dropped = translate({"messages": [user(text("Hi"), {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}})]},
                           supported=DEFAULT_SUPPORTED - {"images"})
    assert dropped == ["images"]


def test_pdfs_become_input_file_parts_by_data_or_url() -> None:
    request, dropped = translate({"messages": [user(
        {"type": "document", "title": "report.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/paper.pdf"}},
        text("Summarise both."))]})
    assert request["input"][0]["content"] == [
        {"type": "input_file", "filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQK"},
        {"type": "input_file", "file_url": "https://example.com/paper.pdf"},
        {"type": "input_text", "text": "Summarise both."}]
    assert dropped == []


def test_text_documents_become_text_with_their_title() -> None:
    request, _ = translate({"messages": [user({"type": "document", "title": "Notes",
                                               "source": {"type": "text", "media_type": "text/plain", "data": "abc"}})]})
    assert request["input"][0]["content"] == [{"type": "input_text", "text": "Notes\n\nabc"}]


def test_unknown_user_blocks_are_reported() -> None:
    request, dropped = translate({"messages": [user(text("Hi"), {"type": "search_result", "source": "x"})]})
    assert request["input"][0]["content"] == [{"type": "input_text", "text": "Hi"}] and dropped == ["search_result"]


# -- tools ---------------------------------------------------------------------------------------

def test_custom_tools_become_non_strict_function_tools() -> None:
    request, dropped = translate({"tools": [WEATHER_TOOL, {**WEATHER_TOOL, "name": "strict_one", "strict": True}]})
    assert request["tools"] == [
        {"type": "function", "name": "get_weather", "description": "Weather for a city",
         "parameters": WEATHER_TOOL["input_schema"], "strict": False},
        {"type": "function", "name": "strict_one", "description": "Weather for a city",
         "parameters": WEATHER_TOOL["input_schema"], "strict": True}]
    assert dropped == []


def test_server_tools_are_dropped_and_reported() -> None:
    request, dropped = translate({"tools": [WEATHER_TOOL, {"type": "web_search_20250305", "name": "web_search"}]})
    assert [t["name"] for t in request["tools"]] == ["get_weather"] and dropped == ["server_tools"]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "name": "get_weather"}),
])
def test_tool_choice_maps_onto_the_responses_forms(choice: dict[str, Any], expected: Any) -> None:
    request, dropped = translate({"tools": [WEATHER_TOOL], "tool_choice": choice})
    assert request["tool_choice"] == expected and dropped == []


def test_tool_choice_auto_is_the_default_and_unknown_names_are_reported() -> None:
    assert "tool_choice" not in translate({"tools": [WEATHER_TOOL], "tool_choice": {"type": "auto"}})[0]
    request, dropped = translate({"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "nope"}})
    assert "tool_choice" not in request and dropped == ["tool_choice"]


def test_disable_parallel_tool_use_turns_parallel_calls_off() -> None:
    request, _ = translate({"tools": [WEATHER_TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}})
    assert request["parallel_tool_calls"] is False


def test_tool_turns_become_function_call_and_output_items_paired_by_call_id() -> None:
    request, dropped = translate({"tools": [WEATHER_TOOL], "messages": [
        user(text("Weather in Paris and Rome?")),
        assistant(text("Let me check."), tool_use("call_a"), tool_use("call_b", {"city": "Rome"})),
        user(tool_result("call_a"), tool_result("call_b", [text("21°C")]), text("Thanks"))]})
    assert request["input"][1:] == [
        {"type": "message", "role": "assistant", "content": "Let me check."},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18°C"},
        {"type": "function_call_output", "call_id": "call_b", "output": "21°C"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks"}]}]
    assert dropped == []


def test_a_tool_error_is_marked_and_tool_images_stay_in_the_output() -> None:
    request, _ = translate({"messages": [
        user(text("Go")), assistant(tool_use("call_a")),
        user(tool_result("call_a", "city not found", is_error=True),
             tool_result("call_b", [text("chart:"), {"type": "image", "source": {"type": "url",
                                                                                  "url": "https://x/c.png"}}]))]})
    outputs = [i for i in request["input"] if i["type"] == "function_call_output"]
    assert outputs[0]["output"] == "Error: city not found"
    assert outputs[1]["output"] == [{"type": "input_text", "text": "chart:"},
                                    {"type": "input_image", "image_url": "https://x/c.png", "detail": "auto"}]


def test_raw_arguments_kept_from_a_bad_reply_go_back_unchanged() -> None:
    request, _ = translate({"messages": [user(text("Go")), assistant(tool_use("c", {"_raw_arguments": "{bad"}))]})
    assert request["input"][1]["arguments"] == "{bad"


# -- thinking and reasoning ----------------------------------------------------------------------

@pytest.mark.parametrize(("budget", "effort"), [(1024, "low"), (8000, "medium"), (32000, "high")])
def test_thinking_budget_becomes_effort_with_summaries(budget: int, effort: str) -> None:
    request, dropped = translate({"thinking": {"type": "enabled", "budget_tokens": budget}})
    assert request["reasoning"] == {"effort": effort, "summary": "auto"} and dropped == []


def test_adaptive_thinking_keeps_the_models_effort_and_asks_for_summaries() -> None:
    assert translate({"thinking": {"type": "adaptive"}})[0]["reasoning"] == {"summary": "auto"}


def test_output_config_effort_is_sent_at_the_nearest_level_the_model_accepts() -> None:
    request, _ = translate({"output_config": {"effort": "max"}, "thinking": {"type": "adaptive"}},
                           reasoning_efforts=("low", "medium", "high", "xhigh"))
    assert request["reasoning"] == {"effort": "xhigh", "summary": "auto"}
    assert translate({"output_config": {"effort": "low"}})[0]["reasoning"] == {"effort": "low"}


def test_disabled_thinking_asks_for_no_effort_where_the_model_allows_it() -> None:
    assert translate({"thinking": {"type": "disabled"}}, reasoning_efforts=("none", "low", "medium", "high"))[0][
        "reasoning"] == {"effort": "none"}
    assert "reasoning" not in translate({"thinking": {"type": "disabled"}})[0]


def test_a_model_that_does_not_reason_gets_no_reasoning_parameters() -> None:
    request, dropped = translate({"thinking": {"type": "enabled", "budget_tokens": 2000}}, reasoning=False)
    assert "reasoning" not in request and "include" not in request and request["store"] is False
    assert dropped == ["thinking"]


def test_the_signature_round_trips_a_reasoning_item() -> None:
    signature = encode_signature("rs_abc", "gAAAA+/==")
    assert signature.startswith(SIGNATURE_PREFIX)
    assert decode_signature(signature) == ("rs_abc", "gAAAA+/==")
    for foreign in ("", "EqQBCkYIBxgCKkB", SIGNATURE_PREFIX + "!!!", SIGNATURE_PREFIX + "bnVsbA", None):
        assert decode_signature(foreign) is None


def test_reasoning_carried_in_a_signature_goes_back_before_the_calls_it_led_to() -> None:
    answer = from_response(response_body(Script(items=[
        Reasoning(summary=[["I should look it up."]], encrypted_content="gAAAAEnc1", id="rs_1"),
        FunctionCall("call_w", "get_weather", '{"city":"Paris"}')])), model="openai/gpt-5.5-pro", provider="openai")
    request, dropped = translate({"thinking": {"type": "enabled", "budget_tokens": 4096}, "tools": [WEATHER_TOOL],
                                  "messages": [user(text("Weather?")),
                                               {"role": "assistant", "content": answer["content"]},
                                               user(tool_result("call_w"))]})
    assert request["input"][1:] == [
        {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAEnc1",
         "summary": [{"type": "summary_text", "text": "I should look it up."}]},
        {"type": "function_call", "call_id": "call_w", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_w", "output": "18°C"}]
    assert dropped == []


def test_thinking_without_our_signature_and_redacted_thinking_stay_behind_silently() -> None:
    request, dropped = translate({"messages": [
        user(text("Hi")),
        assistant({"type": "thinking", "thinking": "Claude's own", "signature": "EqQBCkYIBxgCKkB"},
                  {"type": "redacted_thinking", "data": "opaque"}, text("Hello")),
        user(text("Again"))]})
    assert [i["type"] for i in request["input"]] == ["message", "message", "message"]
    assert dropped == []


def test_a_reasoning_item_with_nothing_after_it_in_its_turn_is_left_out() -> None:
    signature = encode_signature("rs_1", "enc")
    request, _ = translate({"messages": [user(text("Hi")),
                                         assistant(text("Sure."), {"type": "thinking", "thinking": "", "signature": signature}),
                                         user(text("Go on"))]})
    assert [i["type"] for i in request["input"]] == ["message", "message", "message"]


def test_text_blocks_of_one_answer_are_one_assistant_message() -> None:
    request, _ = translate({"messages": [user(text("Hi")), assistant(text("Hel"), text("lo")), user(text("Bye"))]})
    assert request["input"][1] == {"type": "message", "role": "assistant", "content": "Hello"}


def test_output_format_becomes_a_strict_json_schema_text_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
    request, dropped = translate({"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert request["text"] == {"format": {"type": "json_schema", "name": "output", "schema": schema, "strict": True}}
    assert dropped == []


def test_answers_of_every_kind_translate_back_into_a_valid_next_request() -> None:
    answer = from_response(response_body(Script(items=[
        Reasoning(summary=[["a"], ["b"]]), Text(parts=[["Hi ", "there"]]),
        FunctionCall("call_1", "get_weather", "not json"), Reasoning(summary=[], id="rs_2"),
        FunctionCall("call_2", "get_weather", "{}")])), model="m", provider="openai")
    request, dropped = translate({"tools": [WEATHER_TOOL], "messages": [
        user(text("Go")), {"role": "assistant", "content": answer["content"]},
        user(tool_result("call_1"), tool_result("call_2"))]})
    assert [i["type"] for i in request["input"]] == [
        "message", "reasoning", "message", "function_call", "reasoning", "function_call",
        "function_call_output", "function_call_output"]
    assert request["input"][3]["arguments"] == "not json" and dropped == []


# -- any request ---------------------------------------------------------------------------------

VOCABULARY = tuple(sorted(DEFAULT_SUPPORTED))
REPORTABLE = set(VOCABULARY) | {"server_tools", "top_k", "stop_sequences"}


@st.composite
def requests_with_carried_reasoning(draw: st.DrawFn) -> dict[str, Any]:
    """Any Anthropic request (the chat translator's generator), its thinking blocks carrying a
    reasoning item of ours or someone else's signature."""
    body = draw(any_request())
    for message in body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else ():
            if block.get("type") == "thinking" and draw(st.booleans()):
                block["signature"] = encode_signature(draw(st.from_regex(r"rs_[a-z0-9]{1,12}", fullmatch=True)),
                                                      draw(st.from_regex(r"gAAAA[A-Za-z0-9+/=]{1,40}", fullmatch=True)))
    return body


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=requests_with_carried_reasoning(), stream=st.booleans(),
       options=st.builds(ResponsesOptions, supported=st.frozensets(st.sampled_from(VOCABULARY)),
                         reasoning=st.booleans(),
                         reasoning_efforts=st.sampled_from([("minimal", "low", "medium", "high"),
                                                            ("none", "low", "medium", "high", "xhigh")])))
def test_any_valid_request_translates_to_a_valid_create_response(body: dict[str, Any], stream: bool,
                                                                 options: ResponsesOptions) -> None:
    request, dropped = to_responses_request(body, upstream_model="gpt-5.5-pro", options=options, stream=stream)
    assert responses_request_errors(request) == []
    assert set(request) <= responses_request_fields()
    assert json.loads(json.dumps(request)) == request
    assert set(dropped) <= REPORTABLE and len(dropped) == len(set(dropped))
    assert request["store"] is False
    called: set[str] = set()
    items = request["input"]
    for position, item in enumerate(items):
        if item["type"] == "function_call":
            called.add(item["call_id"])
        elif item["type"] == "function_call_output":
            assert item["call_id"] in called, "an output answers a call made before it"
        elif item["type"] == "reasoning":
            assert position + 1 < len(items) and items[position + 1]["type"] in ("message", "function_call",
                                                                                  "reasoning")
            assert items[position + 1].get("role", "assistant") == "assistant", "reasoning leads to its own turn's items"
