"""The inbound OpenAI translators (chat completions, Responses), as pure functions: what the canonical
request holds, what the answers look like (validated against OpenAI's OpenAPI schemas), and that
each fact reads the same in both directions as the upstream translators read it."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from providers.openai_chat_errors import map_error
from providers.openai_chat_inbound import ChatShape, ChunkWriter, from_message, to_canonical
from providers.openai_chat_request import ChatOptions, effort_for_budget, to_chat_request
from providers.openai_chat_response import anthropic_usage, chat_usage, from_chat_response
from providers.openai_inbound import Refused, openai_error
from providers import openai_responses_inbound as responses
from tests.fakes.anthropic import event, message_body, stream_events

DATA = Path(__file__).resolve().parent.parent / "data"


def nullable(node):
    """OpenAPI's `nullable: true` as JSON Schema says it (validators ignore the OpenAPI keyword)."""
    if isinstance(node, dict):
        node = {k: nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    return [nullable(v) for v in node] if isinstance(node, list) else node


def validator(name: str, ref: str | None = None) -> jsonschema.Draft202012Validator:
    schema = nullable(json.loads((DATA / name).read_text()))
    if ref is not None:
        schema = {**schema, "$ref": f"#/$defs/{ref}"}
    return jsonschema.Draft202012Validator(schema)


COMPLETION = validator("openai_chat_response.schema.json")
CHUNK = validator("openai_chat_chunk.schema.json")
RESPONSE_EVENT = validator("openai_responses_events.schema.json")
RESPONSE = validator("openai_responses_events.schema.json", "Response")
SHAPE = ChatShape(stream=False, include_usage=False, format_tool=None)


def chunks_of(data: bytes) -> list[dict]:
    lines = [line for line in data.decode().split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def tool_stream() -> list[bytes]:
    events = stream_events(["Let me look."])[:-2]  # without message_delta and message_stop
    return events + [
        event("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 1,
                                      "delta": {"type": "input_json_delta", "partial_json": '{"q":'}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 1,
                                      "delta": {"type": "input_json_delta", "partial_json": '"x"}'}}),
        event("content_block_stop", {"type": "content_block_stop", "index": 1}),
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                                "usage": {"output_tokens": 9}}),
        event("message_stop", {"type": "message_stop"})]


# -- chat completions: the request ---------------------------------------------------------------

def test_chat_request_round_trips_through_the_upstream_translator():
    """An OpenAI request made canonical and sent on to an OpenAI upstream says what it said."""
    body = {"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Look it up"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "On it.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 300, "stop": "END", "user": "u1",
        "temperature": 0.2}
    canonical, shape = to_canonical(body)
    again, dropped = to_chat_request(canonical, upstream_model="m", options=ChatOptions(), stream=False)
    assert dropped == []
    assert again["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": body["messages"][1]["content"]},
        {"role": "assistant", "content": "On it.", "tool_calls": body["messages"][2]["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"}]
    assert again["tools"] == [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert again["tool_choice"] == "required" and again["parallel_tool_calls"] is False
    assert again["max_tokens"] == 300 and again["stop"] == ["END"] and again["user"] == "u1"
    assert again["temperature"] == 0.2 and shape.format_tool is None


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_becomes_a_budget_that_reads_back_as_the_same_effort(effort):
    canonical, _ = to_canonical({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                 "reasoning_effort": effort})
    assert effort_for_budget(canonical["thinking"]["budget_tokens"]) == effort
    assert canonical["max_tokens"] > canonical["thinking"]["budget_tokens"]


def test_a_maximum_too_small_to_think_in_thinks_not():
    canonical, _ = to_canonical({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                 "reasoning_effort": "high", "max_completion_tokens": 500})
    assert "thinking" not in canonical and canonical["max_tokens"] == 500


def test_json_schema_with_thinking_travels_as_structured_output():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    canonical, shape = to_canonical({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                     "reasoning_effort": "low",
                                     "response_format": {"type": "json_schema",
                                                         "json_schema": {"name": "x", "schema": schema}}})
    assert canonical["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert shape.format_tool is None and "tool_choice" not in canonical


def test_router_extensions_reach_the_canonical_request():
    canonical, _ = to_canonical({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                 "models": ["b"], "provider": {"sort": "price"}, "session_id": "s",
                                 "trace": {"k": 1}, "plugins": [{"id": "web"}]})
    assert canonical["models"] == ["b"] and canonical["provider"] == {"sort": "price"}
    assert canonical["session_id"] == "s" and canonical["trace"] == {"k": 1} and canonical["plugins"] == [{"id": "web"}]


@pytest.mark.parametrize("body, param", [
    ({"n": 3}, "n"), ({"logprobs": True}, "logprobs"), ({"top_logprobs": 2}, "logprobs"),
    ({"functions": []}, "functions"), ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages"),
    ({"tools": [{"type": "custom", "custom": {}}]}, "tools"), ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"messages": []}, "messages"), ({"max_tokens": 0}, "max_completion_tokens")])
def test_what_cannot_be_served_is_refused_naming_the_parameter(body, param):
    with pytest.raises(Refused) as caught:
        to_canonical({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body})
    assert caught.value.param == param


# -- chat completions: the answer ----------------------------------------------------------------

def test_message_becomes_a_valid_chat_completion():
    message = message_body(content=[{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                    {"type": "text", "text": "Hi"},
                                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
                           stop_reason="tool_use", cache_read=4)
    completion = from_message(message, answer_id="chatcmpl-1", created=1, shape=SHAPE)
    COMPLETION.validate(completion)
    reply = completion["choices"][0]
    assert reply["finish_reason"] == "tool_calls" and reply["message"]["reasoning_content"] == "hmm"
    assert reply["message"]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q":"x"}'}
    assert completion["usage"]["prompt_tokens_details"]["cached_tokens"] == 4


def test_chat_completion_made_from_a_message_reads_back_as_that_message():
    message = message_body("Hello", stop_reason="max_tokens", input_tokens=3, cache_read=2, output_tokens=5)
    completion = from_message(message, answer_id="chatcmpl-1", created=1, shape=SHAPE)
    back = from_chat_response(completion, model="m", provider="p")
    assert back["content"] == message["content"] and back["stop_reason"] == "max_tokens"
    assert back["usage"] == {k: message["usage"][k] for k in back["usage"]}


@pytest.mark.parametrize("usage", [{"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 7,
                                    "cache_creation_input_tokens": 0}])
def test_usage_maps_back_and_forth(usage):
    assert anthropic_usage(chat_usage(usage)) == usage


def test_stream_becomes_valid_chunks_with_tool_calls_and_usage_when_asked():
    writer = ChunkWriter(answer_id="chatcmpl-1", created=1, shape=ChatShape(True, True, None))
    raw = b"".join(tool_stream())
    out = b"".join(writer.feed(raw[i:i + 7]) for i in range(0, len(raw), 7))  # cut anywhere
    chunks = chunks_of(out)
    for chunk in chunks:
        CHUNK.validate(chunk)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if c["choices"]
             and c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0]["id"] == "toolu_1" and "".join(c["function"]["arguments"] for c in calls) == '{"q":"x"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 9 and chunks[-1]["choices"] == []


def test_a_stream_error_ends_the_chunks_with_an_error_object():
    writer = ChunkWriter(answer_id="chatcmpl-1", created=1, shape=ChatShape(True, False, None))
    out = writer.feed(stream_events(["a"])[0] + b'event: error\ndata: {"type":"error","error":'
                      b'{"type":"overloaded_error","message":"busy"}}\n\n' + stream_events(["b"])[-1])
    last = json.loads(out.decode().strip().split("\n\n")[-1][6:])
    assert last["error"]["message"] == "busy" and b"[DONE]" not in out


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, anthropic_type, openai_status", [
    (400, "invalid_request_error", 400), (401, "authentication_error", 401), (403, "permission_error", 403),
    (404, "not_found_error", 404), (429, "rate_limit_error", 429), (502, "api_error", 502),
    (504, "timeout_error", 504), (529, "overloaded_error", 503)])
def test_errors_take_openais_envelope_and_read_back_as_the_same_kind(status, anthropic_type, openai_status):
    body = orjson.dumps({"type": "error", "error": {"type": anthropic_type, "message": "why"}})
    out_status, out = openai_error(status, body)
    error = orjson.loads(out)["error"]
    assert out_status == openai_status and set(error) == {"message", "type", "param", "code"}
    assert map_error(out_status, out)[1:] == (anthropic_type, "why")


# -- responses -----------------------------------------------------------------------------------

def response_shape(**body) -> responses.ResponseShape:
    return responses.to_canonical({"model": "m", "input": "hi", **body})[1]


def test_responses_message_becomes_a_valid_response():
    message = message_body(content=[{"type": "thinking", "thinking": "hmm", "signature": "sig-1"},
                                    {"type": "text", "text": "Hi"},
                                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
                           stop_reason="tool_use")
    answer = responses.from_message(message, answer_id="resp_1", created=1, shape=response_shape())
    RESPONSE.validate(answer)
    assert [item["type"] for item in answer["output"]] == ["reasoning", "message", "function_call"]
    assert answer["output"][0]["encrypted_content"] == "sig-1"


def test_responses_reasoning_item_comes_back_as_the_signed_thinking_block():
    canonical, _ = responses.to_canonical({"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}],
         "encrypted_content": "sig-1"},
        {"type": "function_call", "call_id": "toolu_1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "ok"}]})
    assert canonical["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig-1"},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]


def test_responses_stream_events_are_valid_and_in_order():
    events = response_events(tool_stream())
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert events[-1]["response"]["output"][1]["arguments"] == '{"q":"x"}'


def response_events(stream: list[bytes]) -> list[dict]:
    """The Responses events written for an Anthropic stream, each checked against the schema."""
    out = responses.EventWriter(answer_id="resp_1", created=1, shape=response_shape()).feed(b"".join(stream))
    events = [json.loads(block.split("\ndata: ", 1)[1]) for block in out.decode().split("\n\n") if block]
    for item in events:
        RESPONSE_EVENT.validate(item)
    return events


def test_a_response_cut_short_by_max_tokens_is_incomplete():
    answer = responses.from_message(message_body("Hi", stop_reason="max_tokens"), answer_id="resp_1", created=1,
                                    shape=response_shape())
    assert answer["status"] == "incomplete" and answer["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize("body", [{"store": True}, {"previous_response_id": "resp_0"}, {"conversation": "c"},
                                  {"input": [{"type": "item_reference", "id": "msg_1"}]}])
def test_responses_state_is_refused(body):
    with pytest.raises(Refused, match="stateless"):
        responses.to_canonical({"model": "m", "input": "hi", **body})


def thinking_stream() -> list[bytes]:
    events = stream_events(["4"])
    thinking = [
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "thinking_delta", "thinking": "Two and two."}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "signature_delta", "signature": "sig-9"}}),
        event("content_block_stop", {"type": "content_block_stop", "index": 0})]
    renumbered = [e.replace(b'"index":0', b'"index":1') for e in events[1:]]
    return [events[0], *thinking, *renumbered]


def test_thinking_streams_as_reasoning_content_chunks():
    chunks = chunks_of(ChunkWriter(answer_id="chatcmpl-1", created=1, shape=SHAPE).feed(b"".join(thinking_stream())))
    for chunk in chunks:
        CHUNK.validate(chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Two and two."
    assert "".join(d.get("content") or "" for d in deltas) == "4"


def test_thinking_streams_as_a_reasoning_item_carrying_the_signature():
    events = response_events(thinking_stream())
    kinds = [e["type"] for e in events]
    assert kinds[2:8] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                          "response.reasoning_summary_part.done", "response.output_item.done"]
    reasoning = events[-1]["response"]["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["encrypted_content"] == "sig-9"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Two and two."}]
    assert events[-1]["response"]["output"][1]["content"][0]["text"] == "4"


def test_empty_messages_are_left_out_rather_than_refused_upstream():
    canonical, _ = to_canonical({"model": "m", "messages": [
        {"role": "user", "content": ""}, {"role": "assistant", "content": None},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]}],
        "tool_choice": "none"})
    assert canonical["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert "tool_choice" not in canonical
