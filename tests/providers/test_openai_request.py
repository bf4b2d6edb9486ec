"""Anthropic request → chat completions request: one behaviour per test, every request schema-checked."""
from __future__ import annotations

from typing import Any

import pytest

from providers.openai_chat import (
    DEFAULT_SUPPORTED,
    RAW_ARGUMENTS_KEY,
    ChatOptions,
    UnsupportedParameters,
    effort_for_budget,
    to_chat_request,
)
from tests.fakes.openai import chat_request_errors, chat_request_fields

VENDOR_FIELDS = {"top_k", "enable_thinking", "thinking_budget", "thinking"}  # only when options ask for them
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def translate(body: dict[str, Any], *, stream: bool = False, **options: Any) -> tuple[dict[str, Any], list[str]]:
    full = {"model": "openai/gpt-5", "max_tokens": 256, **body}
    full.setdefault("messages", [{"role": "user", "content": "Hi"}])
    request, dropped = to_chat_request(full, upstream_model="gpt-5", options=ChatOptions(**options), stream=stream)
    assert chat_request_errors(request) == []
    assert set(request) <= chat_request_fields() | VENDOR_FIELDS
    return request, dropped


def with_options(*, add: set[str] = frozenset(), remove: set[str] = frozenset()) -> frozenset[str]:
    return (DEFAULT_SUPPORTED | add) - remove


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def tool_use(id: str, name: str = "get_weather", input: Any = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input if input is not None else {"city": "Paris"}}


def tool_result(id: str, content: Any = "18°C", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id, "content": content, **extra}


WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


# -- basics --------------------------------------------------------------------------------------

def test_model_messages_and_max_tokens_are_mapped() -> None:
    request, dropped = translate({"messages": [{"role": "user", "content": "Hello"}]})
    assert request == {"model": "gpt-5", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 256}
    assert dropped == []


def test_max_tokens_goes_to_max_completion_tokens_when_the_endpoint_wants_it() -> None:
    request, _ = translate({}, max_tokens_field="max_completion_tokens")
    assert request["max_completion_tokens"] == 256 and "max_tokens" not in request


def test_stream_asks_for_usage_in_the_final_chunk() -> None:
    request, _ = translate({}, stream=True)
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert "stream" not in translate({"stream": True})[0]  # the caller decides, not the body


def test_system_string_becomes_the_first_message() -> None:
    request, _ = translate({"system": "Be brief."})
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}


def test_system_blocks_are_joined_and_cache_control_is_dropped_silently() -> None:
    system = [text("You are a CLI."), text("Be brief.", cache_control={"type": "ephemeral"})]
    request, dropped = translate({"system": system, "cache_control": {"type": "ephemeral"}})
    assert request["messages"][0] == {"role": "system", "content": "You are a CLI.\n\nBe brief."}
    assert dropped == []


def test_empty_system_sends_no_system_message() -> None:
    request, _ = translate({"system": []})
    assert [m["role"] for m in request["messages"]] == ["user"]


def test_text_blocks_of_a_user_turn_travel_as_one_string() -> None:
    request, _ = translate({"messages": [user(text("<reminder>x</reminder>"), text("What now?"))]})
    assert request["messages"] == [{"role": "user", "content": "<reminder>x</reminder>\n\nWhat now?"}]


# -- images and documents ------------------------------------------------------------------------

def test_base64_image_becomes_a_data_url_part() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    request, _ = translate({"messages": [user(text("What is this?"), image)]})
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]


def test_url_image_keeps_its_url() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    request, _ = translate({"messages": [user(image, text("Describe"))]})
    assert request["messages"][0]["content"][0] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}


def test_images_are_dropped_and_reported_where_the_endpoint_sees_no_images() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    request, dropped = translate({"messages": [user(text("What is this?"), image)]},
                                 supported=with_options(remove={"images"}))
    assert request["messages"] == [{"role": "user", "content": "What is this?"}]
    assert dropped == ["images"]


def test_plain_text_document_is_sent_as_text_under_its_title() -> None:
    document = {"type": "document", "title": "notes.txt",
                "source": {"type": "text", "media_type": "text/plain", "data": "buy milk"}}
    request, dropped = translate({"messages": [user(document, text("Summarise"))]},
                                 supported=with_options(remove={"documents"}))
    assert request["messages"][0]["content"] == "notes.txt\n\nbuy milk\n\nSummarise"
    assert dropped == []


def test_content_document_sends_its_blocks() -> None:
    document = {"type": "document", "source": {"type": "content", "content": [text("part one"), text("part two")]}}
    request, _ = translate({"messages": [user(document)]})
    assert request["messages"][0]["content"] == "part one\n\npart two"


def test_base64_pdf_becomes_a_file_part() -> None:
    document = {"type": "document", "title": "report.pdf",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}
    request, dropped = translate({"messages": [user(document, text("Summarise"))]})
    assert request["messages"][0]["content"][0] == {
        "type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQK"}}
    assert dropped == []


@pytest.mark.parametrize("source", [
    {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
    {"type": "url", "url": "https://example.com/report.pdf"},
])
def test_pdf_the_endpoint_cannot_take_is_dropped_and_reported(source: dict[str, Any]) -> None:
    supported = with_options(remove={"documents"}) if source["type"] == "base64" else DEFAULT_SUPPORTED
    request, dropped = translate({"messages": [user({"type": "document", "source": source}, text("Summarise"))]},
                                 supported=supported)
    assert request["messages"] == [{"role": "user", "content": "Summarise"}]
    assert dropped == ["documents"]


# -- tool use history ----------------------------------------------------------------------------

def test_tool_use_becomes_assistant_tool_calls_with_ids_kept() -> None:
    request, _ = translate({"tools": [WEATHER_TOOL], "messages": [
        user(text("Weather in Paris?")),
        assistant(text("Let me check."), tool_use("toolu_01", input={"city": "Paris", "unit": "°C"})),
        user(tool_result("toolu_01"))]})
    assert request["messages"][1] == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "toolu_01", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"°C"}'}}]}
    assert request["messages"][2] == {"role": "tool", "tool_call_id": "toolu_01", "content": "18°C"}


def test_assistant_turn_with_only_tool_calls_has_null_content() -> None:
    request, _ = translate({"messages": [user(text("Go")), assistant(tool_use("toolu_01")),
                                         user(tool_result("toolu_01"))]})
    assert request["messages"][1]["content"] is None


def test_several_results_each_get_a_tool_message_before_the_remaining_user_text() -> None:
    request, _ = translate({"messages": [
        user(text("Compare Paris and Rome")),
        assistant(tool_use("toolu_a"), tool_use("toolu_b", input={"city": "Rome"})),
        user(tool_result("toolu_a", "18°C"), text("Also: which is warmer?"), tool_result("toolu_b", [text("24°C")]))]})
    assert request["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_a", "content": "18°C"},
        {"role": "tool", "tool_call_id": "toolu_b", "content": "24°C"},
        {"role": "user", "content": "Also: which is warmer?"}]


def test_tool_error_is_marked_in_the_content() -> None:
    request, _ = translate({"messages": [
        user(text("Go")), assistant(tool_use("toolu_01")),
        user(tool_result("toolu_01", "city not found", is_error=True))]})
    assert request["messages"][2]["content"] == "Error: city not found"


def test_empty_tool_error_still_says_error() -> None:
    request, _ = translate({"messages": [user(text("Go")), assistant(tool_use("toolu_01")),
                                         user(tool_result("toolu_01", [], is_error=True))]})
    assert request["messages"][2]["content"] == "Error"


def test_images_in_a_tool_result_follow_as_a_user_message() -> None:
    screenshot = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    request, _ = translate({"messages": [
        user(text("Take a screenshot")), assistant(tool_use("toolu_01", name="screenshot", input={})),
        user(tool_result("toolu_01", [text("done"), screenshot]), text("What do you see?"))]})
    assert request["messages"][2] == {"role": "tool", "tool_call_id": "toolu_01", "content": "done"}
    assert request["messages"][3] == {"role": "user", "content": [
        {"type": "text", "text": "[attachments of tool result toolu_01]"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "text", "text": "What do you see?"}]}


def test_thinking_blocks_in_history_are_dropped_by_default() -> None:
    request, dropped = translate({"messages": [
        user(text("Hi")),
        assistant({"type": "thinking", "thinking": "They greet me.", "signature": "sig"},
                  {"type": "redacted_thinking", "data": "opaque"}, text("Hello!")),
        user(text("Bye"))]})
    assert request["messages"][1] == {"role": "assistant", "content": "Hello!"}
    assert dropped == []


def test_thinking_history_travels_as_reasoning_content_where_wanted() -> None:
    request, _ = translate({"messages": [
        user(text("Hi")), assistant({"type": "thinking", "thinking": "They greet me.", "signature": "sig"},
                                    tool_use("toolu_01")), user(tool_result("toolu_01"))]},
        reasoning_history=True)
    assert request["messages"][1]["reasoning_content"] == "They greet me."


def test_raw_arguments_kept_from_a_bad_reply_are_sent_back_unchanged() -> None:
    request, _ = translate({"messages": [
        user(text("Go")), assistant(tool_use("toolu_01", input={RAW_ARGUMENTS_KEY: "{city: Paris"})),
        user(tool_result("toolu_01"))]})
    assert request["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{city: Paris"


# -- tools and tool_choice -----------------------------------------------------------------------

def test_tools_become_functions() -> None:
    request, _ = translate({"tools": [{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}},
                                      {"type": "custom", "name": "noop", "input_schema": {"type": "object"},
                                       "strict": True}]})
    assert request["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                          "parameters": WEATHER_TOOL["input_schema"]}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}, "strict": True}}]


def test_server_tools_are_dropped_and_reported() -> None:
    request, dropped = translate({"tools": [WEATHER_TOOL, {"type": "web_search_20250305", "name": "web_search"},
                                            {"type": "bash_20250124", "name": "bash"}]})
    assert [t["function"]["name"] for t in request["tools"]] == ["get_weather"]
    assert dropped == ["server_tools"]


def test_forcing_a_dropped_server_tool_reports_tool_choice_too() -> None:
    request, dropped = translate({"tools": [{"type": "web_search_20250305", "name": "web_search"}],
                                  "tool_choice": {"type": "tool", "name": "web_search"}})
    assert "tools" not in request and "tool_choice" not in request
    assert dropped == ["server_tools", "tool_choice"]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, None),
    ({"type": "any"}, "required"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ({"type": "none"}, "none"),
])
def test_tool_choice_maps(choice: dict[str, Any], expected: Any) -> None:
    request, dropped = translate({"tools": [WEATHER_TOOL], "tool_choice": choice})
    assert request.get("tool_choice") == expected
    assert dropped == []


def test_disable_parallel_tool_use_sets_parallel_tool_calls_false() -> None:
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    request, _ = translate({"tools": [WEATHER_TOOL], "tool_choice": choice})
    assert request["parallel_tool_calls"] is False


def test_parallel_tool_calls_unsupported_is_reported() -> None:
    choice = {"type": "any", "disable_parallel_tool_use": True}
    request, dropped = translate({"tools": [WEATHER_TOOL], "tool_choice": choice},
                                 supported=with_options(remove={"parallel_tool_calls"}))
    assert "parallel_tool_calls" not in request and dropped == ["parallel_tool_calls"]


def test_tools_unsupported_are_dropped_and_reported() -> None:
    request, dropped = translate({"tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}},
                                 supported=with_options(remove={"tools"}))
    assert "tools" not in request and "tool_choice" not in request
    assert dropped == ["tools", "tool_choice"]


def test_forcing_an_unknown_tool_is_reported() -> None:
    _, dropped = translate({"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "nope"}})
    assert dropped == ["tool_choice"]


# -- sampling, stop sequences, user ----------------------------------------------------------------

def test_temperature_and_top_p_pass_through() -> None:
    request, dropped = translate({"temperature": 0.2, "top_p": 0.9})
    assert (request["temperature"], request["top_p"], dropped) == (0.2, 0.9, [])


def test_temperature_unsupported_is_dropped_and_reported() -> None:
    request, dropped = translate({"temperature": 0.2}, supported=with_options(remove={"temperature"}))
    assert "temperature" not in request and dropped == ["temperature"]


def test_top_k_is_dropped_and_reported_by_default() -> None:
    request, dropped = translate({"top_k": 40})
    assert "top_k" not in request and dropped == ["top_k"]


def test_top_k_is_sent_where_the_endpoint_takes_it() -> None:
    request, dropped = translate({"top_k": 40}, supported=with_options(add={"top_k"}))
    assert request["top_k"] == 40 and dropped == []


def test_stop_sequences_become_stop() -> None:
    request, _ = translate({"stop_sequences": ["END", "\n\nHuman:"]})
    assert request["stop"] == ["END", "\n\nHuman:"]


def test_more_stop_sequences_than_allowed_keep_the_first_four_and_are_reported() -> None:
    request, dropped = translate({"stop_sequences": ["a", "b", "c", "d", "e"]})
    assert request["stop"] == ["a", "b", "c", "d"] and dropped == ["stop_sequences"]


def test_metadata_user_id_becomes_user() -> None:
    request, _ = translate({"metadata": {"user_id": "user_42"}})
    assert request["user"] == "user_42"


def test_metadata_user_id_is_dropped_silently_where_user_is_unsupported() -> None:
    request, dropped = translate({"metadata": {"user_id": "user_42"}}, supported=with_options(remove={"user"}))
    assert "user" not in request and dropped == []


# -- thinking ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("budget", "effort"), [
    (1024, "low"), (4095, "low"), (4096, "medium"), (16383, "medium"), (16384, "high"), (64000, "high")])
def test_thinking_budget_maps_to_reasoning_effort(budget: int, effort: str) -> None:
    request, dropped = translate({"max_tokens": 100000, "thinking": {"type": "enabled", "budget_tokens": budget}})
    assert effort_for_budget(budget) == effort
    assert request["reasoning_effort"] == effort and dropped == []


def test_output_config_effort_wins_and_is_clamped_to_what_the_endpoint_accepts() -> None:
    body = {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}
    assert translate(body)[0]["reasoning_effort"] == "high"
    assert translate(body, reasoning_efforts=("low", "medium", "high", "xhigh", "max"))[0]["reasoning_effort"] == "max"


def test_adaptive_thinking_without_effort_leaves_the_model_default() -> None:
    request, dropped = translate({"thinking": {"type": "adaptive"}})
    assert "reasoning_effort" not in request and dropped == []


def test_disabled_thinking_sends_none_only_where_the_endpoint_accepts_it() -> None:
    assert "reasoning_effort" not in translate({"thinking": {"type": "disabled"}})[0]
    request, _ = translate({"thinking": {"type": "disabled"}}, reasoning_efforts=("none", "low", "medium", "high"))
    assert request["reasoning_effort"] == "none"


def test_enable_thinking_style_endpoints_get_a_flag_and_the_budget() -> None:
    request, _ = translate({"thinking": {"type": "enabled", "budget_tokens": 2048}}, reasoning="enable_thinking")
    assert (request["enable_thinking"], request["thinking_budget"]) == (True, 2048)
    assert translate({"thinking": {"type": "disabled"}}, reasoning="enable_thinking")[0]["enable_thinking"] is False


def test_thinking_object_style_endpoints_get_enabled_or_disabled() -> None:
    request, _ = translate({"thinking": {"type": "enabled", "budget_tokens": 2048}}, reasoning="thinking")
    assert request["thinking"] == {"type": "enabled"}
    assert translate({"thinking": {"type": "disabled"}}, reasoning="thinking")[0]["thinking"] == {"type": "disabled"}


def test_effort_without_reasoning_effort_support_is_reported() -> None:
    _, dropped = translate({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, reasoning="thinking")
    assert dropped == ["effort"]


def test_effort_the_endpoint_does_not_take_is_reported_while_the_budget_still_maps() -> None:
    request, dropped = translate({"thinking": {"type": "enabled", "budget_tokens": 20000},
                                  "output_config": {"effort": "low"}}, supported=with_options(remove={"effort"}))
    assert request["reasoning_effort"] == "high" and dropped == ["effort"]


def test_thinking_without_reasoning_support_is_dropped_and_reported() -> None:
    request, dropped = translate({"thinking": {"type": "enabled", "budget_tokens": 2048}}, reasoning=None)
    assert "reasoning_effort" not in request and dropped == ["thinking"]
    assert translate({"thinking": {"type": "disabled"}}, reasoning=None)[1] == []


# -- structured output, unknown fields, require_parameters ---------------------------------------

def test_output_format_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    request, _ = translate({"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert request["response_format"] == {"type": "json_schema",
                                          "json_schema": {"name": "output", "schema": schema, "strict": True}}


def test_unknown_fields_are_reported_and_router_fields_are_not() -> None:
    request, dropped = translate({"container": "c1", "mcp_servers": [], "service_tier": "auto",
                                  "models": ["a", "b"], "provider": {"order": ["openai"]}, "session_id": "s"})
    assert dropped == ["container", "mcp_servers"]
    assert not {"container", "models", "provider", "session_id"} & set(request)


def test_require_parameters_refuses_instead_of_dropping() -> None:
    with pytest.raises(UnsupportedParameters) as raised:
        translate({"top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 2048}},
                  reasoning=None, require_parameters=True)
    assert raised.value.parameters == ("top_k", "thinking")
    assert "top_k, thinking" in str(raised.value)


def test_require_parameters_passes_when_everything_is_honoured() -> None:
    request, dropped = translate({"temperature": 0.5}, require_parameters=True)
    assert request["temperature"] == 0.5 and dropped == []


def test_options_reject_values_that_would_build_a_wrong_request() -> None:
    with pytest.raises(ValueError):
        ChatOptions(max_tokens_field="max_output_tokens")
    with pytest.raises(ValueError):
        ChatOptions(reasoning="budget")
    with pytest.raises(ValueError):
        ChatOptions(reasoning_efforts=("extreme",))
