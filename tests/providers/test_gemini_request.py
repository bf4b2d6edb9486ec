"""Anthropic request → Gemini GenerateContentRequest: contents, parts, tools and their schemas, generation
settings, thinking, and the thought signatures a follow-up turn must carry back."""
from __future__ import annotations

from typing import Any

import pytest

from providers.gemini import (
    FOREIGN_CALL_SIGNATURE,
    GeminiOptions,
    UnsupportedParameters,
    from_gemini_response,
    signature_in_tool_id,
    to_gemini_request,
)
from tests.fakes.gemini import Answer, function_call, request_problem, response_body, signature_problem, thought

OPTIONS = GeminiOptions()


def translate(options: GeminiOptions = OPTIONS, **body: Any) -> tuple[dict[str, Any], list[str]]:
    body.setdefault("model", "google/gemini-3.5-flash")
    body.setdefault("max_tokens", 256)
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    request, dropped = to_gemini_request(body, options=options)
    assert request_problem(request) is None, request_problem(request)  # Google would accept its shape
    return request, dropped


def weather_tool(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "get_weather", "description": "Weather for a city",
            "input_schema": schema or {"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"]}}


def test_system_becomes_system_instruction_and_roles_become_user_and_model() -> None:
    request, dropped = translate(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                                         {"type": "text", "text": "Answer in French."}],
                                 messages=[{"role": "user", "content": "Hi"},
                                           {"role": "assistant", "content": [{"type": "text", "text": "Salut"}]},
                                           {"role": "user", "content": [{"type": "text", "text": "Ça va ?"}]}])
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAnswer in French."}]}
    assert request["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]},
                                   {"role": "model", "parts": [{"text": "Salut"}]},
                                   {"role": "user", "parts": [{"text": "Ça va ?"}]}]
    assert dropped == []


def test_images_and_pdfs_become_inline_data_and_file_data_parts() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.PNG?size=large"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/paper.pdf"}},
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "a b"}},
        {"type": "text", "text": "Describe them."}]
    request, dropped = translate(messages=[{"role": "user", "content": content}])
    assert request["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.PNG?size=large"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/paper.pdf"}},
        {"text": "Notes\n\na b"},
        {"text": "Describe them."}]
    assert dropped == []


def test_media_an_endpoint_cannot_take_is_dropped_and_reported() -> None:
    content = [{"type": "image", "source": {"type": "file", "file_id": "file_123"}},
               {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
               {"type": "text", "text": "What is this?"}]
    request, dropped = translate(GeminiOptions(supported=frozenset({"tools"})), messages=[
        {"role": "user", "content": content}])
    assert request["contents"][0]["parts"] == [{"text": "What is this?"}]
    assert dropped == ["images", "documents"]


def test_generation_settings_travel_in_generation_config() -> None:
    request, dropped = translate(max_tokens=1000, temperature=0.3, top_p=0.9, top_k=40,
                                 stop_sequences=["END", "STOP"], metadata={"user_id": "u-1"})
    assert request["generationConfig"] == {"maxOutputTokens": 1000, "temperature": 0.3, "topP": 0.9, "topK": 40,
                                           "stopSequences": ["END", "STOP"]}
    assert dropped == []


def test_more_stop_sequences_than_gemini_takes_sends_five_and_reports_it() -> None:
    request, dropped = translate(stop_sequences=[f"s{i}" for i in range(7)])
    assert request["generationConfig"]["stopSequences"] == ["s0", "s1", "s2", "s3", "s4"]
    assert dropped == ["stop_sequences"]


def test_unknown_fields_and_unsupported_sampling_are_reported() -> None:
    _, dropped = translate(GeminiOptions(supported=frozenset({"temperature"})), top_k=5, frobnicate=True)
    assert dropped == ["top_k", "frobnicate"]


def test_require_parameters_refuses_instead_of_dropping() -> None:
    with pytest.raises(UnsupportedParameters) as raised:
        to_gemini_request({"model": "m", "max_tokens": 5, "messages": [], "top_k": 3},
                          options=GeminiOptions(supported=frozenset(), require_parameters=True))
    assert raised.value.parameters == ("top_k",)


# -- tools -----------------------------------------------------------------------------------------

def test_tools_become_function_declarations_with_upper_case_types() -> None:
    request, dropped = translate(tools=[weather_tool()])
    assert request["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]
    assert dropped == []


def test_a_tool_without_parameters_declares_none_since_gemini_refuses_an_empty_object() -> None:
    request, _ = translate(tools=[{"name": "now", "input_schema": {"type": "object", "properties": {}}}])
    assert request["tools"] == [{"functionDeclarations": [{"name": "now"}]}]


def test_schema_is_reduced_to_what_gemini_accepts_and_every_loss_is_reported() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
        "properties": {
            "city": {"type": ["string", "null"], "format": "uri", "examples": ["Paris", "Lyon"]},
            "unit": {"$ref": "#/$defs/Unit"},
            "kind": {"const": "forecast"},
            "when": {"type": "string", "format": "date-time"},
            "days": {"type": "integer", "minimum": 1, "maximum": 14, "multipleOf": 1},
            "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "where": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        },
        "required": ["city", "missing"],
        "$defs": {"Unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"}}}
    request, dropped = translate(tools=[weather_tool(schema)])
    parameters = request["tools"][0]["functionDeclarations"][0]["parameters"]
    assert parameters == {"type": "OBJECT", "required": ["city"], "properties": {
        "city": {"type": "STRING", "nullable": True, "example": "Paris"},
        "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"], "description": "Unit"},
        "kind": {"type": "STRING", "enum": ["forecast"]},
        "when": {"type": "STRING", "format": "date-time"},
        "days": {"type": "INTEGER", "minimum": 1, "maximum": 14},
        "tags": {"type": "ARRAY", "items": {"type": "STRING", "nullable": True}},
        "where": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}}}
    assert dropped == ["input_schema.$schema", "input_schema.additionalProperties", "input_schema.format",
                       "input_schema.examples", "input_schema.multipleOf", "input_schema.oneOf"]


def test_a_recursive_schema_is_cut_where_it_recurses_and_reported() -> None:
    schema = {"type": "object", "properties": {"root": {"$ref": "#/$defs/Node"}},
              "$defs": {"Node": {"type": "object", "properties": {
                  "name": {"type": "string"}, "child": {"$ref": "#/$defs/Node"}}}}}
    request, dropped = translate(tools=[weather_tool(schema)])
    root = request["tools"][0]["functionDeclarations"][0]["parameters"]["properties"]["root"]
    assert root == {"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "child": {}}}
    assert dropped == ["input_schema.$ref"]


def test_an_unreduced_schema_is_what_google_refuses() -> None:
    # The reduction is needed: the fake, written from Google's reference, refuses the raw schema.
    raw = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [
        {"name": "f", "parameters": {"type": "object", "additionalProperties": False,
                                     "properties": {"a": {"type": "string"}}}}]}]}
    assert "Unknown name \"additionalProperties\"" in request_problem(raw)


@pytest.mark.parametrize(("choice", "config"), [
    ({"type": "any"}, {"mode": "ANY"}),
    ({"type": "tool", "name": "get_weather"}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ({"type": "none"}, {"mode": "NONE"}),
])
def test_tool_choice_becomes_function_calling_config(choice: dict[str, Any], config: dict[str, Any]) -> None:
    request, dropped = translate(tools=[weather_tool()], tool_choice=choice)
    assert request["toolConfig"] == {"functionCallingConfig": config}
    assert dropped == []


def test_auto_tool_choice_is_gemini_default_and_parallel_calls_cannot_be_forbidden() -> None:
    request, dropped = translate(tools=[weather_tool()],
                                 tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert "toolConfig" not in request
    assert dropped == ["parallel_tool_calls"]


def test_server_tools_are_reported() -> None:
    request, dropped = translate(tools=[weather_tool(), {"type": "web_search_20250305", "name": "web_search"}])
    assert [d["name"] for d in request["tools"][0]["functionDeclarations"]] == ["get_weather"]
    assert dropped == ["server_tools"]


def test_tool_results_become_function_responses_named_after_their_call() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "get_weather",
                                           "input": {"city": "Paris"}},
                                          {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": [{"type": "text", "text": "Sunny"}]},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "no clock", "is_error": True},
            {"type": "text", "text": "Thanks"}]}]
    request, _ = translate(tools=[weather_tool()], messages=messages)
    assert request["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"output": "Sunny"}}},
        {"functionResponse": {"name": "get_time", "response": {"error": "no clock"}}},
        {"text": "Thanks"}]}


# -- thinking ----------------------------------------------------------------------------------------

def test_thinking_budget_becomes_thinking_budget_with_thoughts_included() -> None:
    request, dropped = translate(thinking={"type": "enabled", "budget_tokens": 4096})
    assert request["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 4096}
    assert dropped == []


def test_disabled_thinking_is_budget_zero_where_the_model_can_stop_thinking() -> None:
    request, _ = translate(thinking={"type": "disabled"})
    assert request["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    request, _ = translate(GeminiOptions(can_disable_thinking=False), thinking={"type": "disabled"})
    assert "thinkingConfig" not in request["generationConfig"]


def test_thinking_level_mode_maps_the_budget_to_a_level() -> None:
    levels = GeminiOptions(thinking="level", thinking_levels=("low", "high"))
    request, _ = translate(levels, thinking={"type": "enabled", "budget_tokens": 32000})
    assert request["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "high"}
    request, _ = translate(levels, thinking={"type": "enabled", "budget_tokens": 8000})  # medium: not offered
    assert request["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "low"}


def test_adaptive_thinking_lets_the_model_choose_its_budget() -> None:
    request, _ = translate(thinking={"type": "adaptive"})
    assert request["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": -1}


# -- thought signatures round trip -------------------------------------------------------------------

def first_turn() -> tuple[dict[str, Any], dict[str, Any]]:
    answer = Answer(parts=[thought("Need the weather.", signature="VGhvdWdodA=="),
                           function_call("get_weather", {"city": "Paris"}, signature="Q2FsbC9zaWcrMQ=="),
                           function_call("get_weather", {"city": "Rome"})])
    body = response_body(answer)
    return body, from_gemini_response(body, model="google/gemini-3.5-flash", provider="google",
                                      message_id="msg_turn1")


def test_function_call_signature_rides_in_the_tool_use_id_and_returns_on_the_same_part() -> None:
    body, message = first_turn()
    calls = [b for b in message["content"] if b["type"] == "tool_use"]
    assert signature_in_tool_id(calls[0]["id"]) == "Q2FsbC9zaWcrMQ=="
    assert signature_in_tool_id(calls[1]["id"]) is None and calls[0]["id"] != calls[1]["id"]
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": message["content"]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": c["id"], "content": "Sunny"}
                                             for c in calls]}]
    request, _ = translate(tools=[weather_tool()], messages=messages, thinking={"type": "enabled",
                                                                                "budget_tokens": 2048})
    assert request["contents"][1] == body["candidates"][0]["content"]  # the model's turn, part for part
    assert [p["functionResponse"]["name"] for p in request["contents"][2]["parts"]] == ["get_weather"] * 2
    assert signature_problem(request["contents"], {"Q2FsbC9zaWcrMQ=="}) is None


def test_a_history_without_the_signature_is_what_gemini_3_refuses() -> None:
    _, message = first_turn()
    contents = [{"role": "user", "parts": [{"text": "Weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}]
    assert "missing a thought_signature" in signature_problem(contents, {"Q2FsbC9zaWcrMQ=="})


def test_calls_another_model_made_carry_the_documented_stand_in_signature() -> None:
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Claude's thoughts", "signature": "EqQBCkYIBxgCKkAx"},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                     "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                                              "content": "Snow"}]}]
    request, dropped = translate(tools=[weather_tool()], messages=messages)
    assert request["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
         "thoughtSignature": FOREIGN_CALL_SIGNATURE}]}
    assert dropped == []


def test_thinking_block_signature_returns_on_its_thought_part() -> None:
    _, message = first_turn()
    thinking = message["content"][0]
    assert thinking == {"type": "thinking", "thinking": "Need the weather.", "signature": "gemini:VGhvdWdodA=="}
    request, _ = translate(messages=[{"role": "user", "content": "Hi"},
                                     {"role": "assistant", "content": [thinking, {"type": "text", "text": "Hello"}]},
                                     {"role": "user", "content": "Again"}])
    assert request["contents"][1]["parts"] == [
        {"text": "Need the weather.", "thought": True, "thoughtSignature": "VGhvdWdodA=="}, {"text": "Hello"}]


def test_catalog_endpoint_data_becomes_options_and_an_unknown_option_is_named() -> None:
    options = GeminiOptions.from_endpoint(["tools", "thinking", "output_config", "frequency_penalty"],
                                          {"thinking": "level", "thinking_levels": ["low", "high"]},
                                          require_parameters=True)
    assert options == GeminiOptions(supported=frozenset({"tools", "thinking", "output_format"}),
                                    require_parameters=True, thinking="level", thinking_levels=("low", "high"))
    with pytest.raises(ValueError, match="'reasoning'"):
        GeminiOptions.from_endpoint(["tools"], {"reasoning": "reasoning_effort"})
