"""The Responses fake over real loopback HTTP: what it sends is what the official `openai` SDK reads
(`responses.create`, JSON and streamed, and the `responses.stream` helper), and the translators
round-trip through it the way the gateway will use them, reasoning carried over two turns included."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from providers.openai_responses import (
    ResponsesOptions,
    ResponsesStreamTranslator,
    from_response,
    map_error,
    responses_url,
    to_responses_request,
    upstream_headers,
)
from tests.fakes.openai import anthropic_events, assemble_message
from tests.fakes.openai_responses import (
    FunctionCall,
    Reasoning,
    ResponsesFake,
    Script,
    Text,
    Usage,
    context_window_exceeded,
    rate_limited,
    responses_json,
    responses_stream,
)

KEY = "sk-test-responses-key-0123456789"
INPUT = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]


@pytest.fixture(scope="module")
def server() -> Iterator[ResponsesFake]:
    with ResponsesFake(api_key=KEY, input_tokens=21) as fake:
        yield fake


@pytest.fixture
def fake(server: ResponsesFake) -> ResponsesFake:
    server.reset()
    return server


@pytest.fixture
def client(fake: ResponsesFake) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0)


# -- the wire format, as the official SDK reads it -----------------------------------------------

def test_auto_reply_is_a_response_counting_max_output_tokens(fake: ResponsesFake, client: openai.OpenAI) -> None:
    response = client.responses.create(model="gpt-5.5-pro", input="Hi", max_output_tokens=40, store=False)
    assert response.output_text == "Hello from the Responses fake."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (21, 40)
    assert response.status == "completed" and response.store is False
    assert fake.responses_requests == [{"model": "gpt-5.5-pro", "input": "Hi", "max_output_tokens": 40, "store": False}]


def test_stream_is_named_events_numbered_in_order(fake: ResponsesFake) -> None:
    with httpx.stream("POST", fake.url + "/v1/responses", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": "gpt-5.5-pro", "input": "Hi", "stream": True}) as response:
        body = response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in body.decode().split("\n\n") if e]
    payloads = []
    for event in events:
        head, data = event.split("\n")
        assert head.startswith("event: ") and data.startswith("data: ")
        payloads.append(json.loads(data[6:]))
        assert payloads[-1]["type"] == head[7:]
    assert [p["type"] for p in payloads[:2]] == ["response.created", "response.in_progress"]
    assert payloads[-1]["type"] == "response.completed"
    numbers = [p["sequence_number"] for p in payloads]
    assert numbers == list(range(len(events)))


def test_sdk_streams_text_reasoning_and_function_calls(fake: ResponsesFake, client: openai.OpenAI) -> None:
    fake.enqueue(responses_stream(Script(items=[
        Reasoning(summary=[["Think", "ing."]], encrypted_content="gAAAAEnc"), Text.of("Let me ", "check."),
        FunctionCall("call_w", "get_weather", ['{"city"', ': "Paris"}'])], usage=Usage(30, 9, cached_tokens=10))))
    events = list(client.responses.create(model="gpt-5.5-pro", input=INPUT, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = {e.type for e in events}
    assert {"response.reasoning_summary_text.delta", "response.output_text.delta",
            "response.function_call_arguments.delta", "response.completed"} <= kinds
    final = events[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].encrypted_content == "gAAAAEnc" and final.output[2].arguments == '{"city": "Paris"}'
    assert final.usage.input_tokens_details.cached_tokens == 10


def test_sdk_stream_helper_accumulates_every_answer_kind(fake: ResponsesFake, client: openai.OpenAI) -> None:
    fake.enqueue(responses_stream(Script(items=[
        Reasoning(summary=[["a"], ["b"]]), Text(parts=[["One", "."], ["Two."]]), FunctionCall("call_1", "f", ["{", "}"]),
        Text.of("No.", refusal=True, id="msg_refusal")])))
    with client.responses.stream(model="gpt-5.5-pro", input=INPUT) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert texts == ["One", ".", "Two."]
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call", "message"]
    assert [s.text for s in final.output[0].summary] == ["a", "b"]
    assert final.output[3].content[0].type == "refusal"


def test_sdk_reads_incomplete_and_failed_answers(fake: ResponsesFake, client: openai.OpenAI) -> None:
    fake.enqueue(responses_json(Script(items=[Text.of("Cut")], status="incomplete")),
                 responses_stream(Script(items=[Text.of("Cut")], status="incomplete")),
                 responses_stream(Script(items=[], status="failed",
                                         error={"code": "server_error", "message": "Boom"})))
    response = client.responses.create(model="m", input="Hi")
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert list(client.responses.create(model="m", input="Hi", stream=True))[-1].type == "response.incomplete"
    last = list(client.responses.create(model="m", input="Hi", stream=True))[-1]
    assert last.type == "response.failed" and last.response.error.message == "Boom"


def test_sdk_reads_an_error_event_that_ends_the_stream(fake: ResponsesFake, client: openai.OpenAI) -> None:
    fake.enqueue(responses_stream(Script(items=[Text.of("Hi")], error_event={"code": "server_error",
                                                                             "message": "Stream broke"})))
    last = list(client.responses.create(model="m", input="Hi", stream=True))[-1]
    assert (last.type, last.code, last.message) == ("error", "server_error", "Stream broke")


def test_sdk_sees_the_fakes_http_errors(fake: ResponsesFake, client: openai.OpenAI) -> None:
    fake.enqueue(rate_limited(retry_after=3), context_window_exceeded())
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="m", input="Hi")
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="m", input="Hi")
    assert raised.value.code == "context_length_exceeded"


def test_fake_requires_a_bearer_key(fake: ResponsesFake) -> None:
    missing = httpx.post(fake.url + "/v1/responses", json={"model": "m", "input": "Hi"})
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]["message"]
    wrong = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-someone-else-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="m", input="Hi")


def test_fake_refuses_a_request_the_schema_refuses(fake: ResponsesFake, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="m", input=[{"type": "message", "role": "human", "content": "Hi"}])  # type: ignore[list-item]
    assert "input/0/role" in raised.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input="Hi", max_output_tokens=4)


def test_auto_reply_calls_a_forced_function_and_reasons_when_asked(fake: ResponsesFake, client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="m", input="Weather?", tool_choice="required", reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}])
    assert [item.type for item in response.output] == ["reasoning", "function_call"]
    assert response.output[0].encrypted_content and response.output[1].name == "get_weather"
    plain = client.responses.create(model="m", input="Hi", reasoning={"effort": "low"})
    assert plain.output[0].encrypted_content is None  # not asked for in `include`


# -- the translators against the fake, as the gateway will use them ------------------------------

WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "openai/gpt-5.5-pro", "max_tokens": 300, "system": "Be brief.", "tools": [WEATHER_TOOL],
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]}


def translate(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    request, dropped = to_responses_request(body, upstream_model="gpt-5.5-pro", options=ResponsesOptions(),
                                            stream=stream)
    assert dropped == []
    return request


def post(fake: ResponsesFake, request: dict[str, Any], *, stream: bool) -> httpx.Response:
    return httpx.post(responses_url(fake.url + "/v1/"), json=request, headers=upstream_headers(api_key=KEY, stream=stream))


def stream_through(fake: ResponsesFake, request: dict[str, Any]) -> list[dict[str, Any]]:
    translator = ResponsesStreamTranslator(model="openai/gpt-5.5-pro", provider="openai", message_id="msg_rt")
    raw: list[bytes] = []
    with httpx.stream("POST", responses_url(fake.url + "/v1"), json=request,
                      headers=upstream_headers(api_key=KEY, stream=True)) as response:
        for piece in response.iter_raw(chunk_size=7):
            raw += translator.feed(piece)
    return anthropic_events(raw + translator.finish())


def test_json_round_trip_through_the_fake(fake: ResponsesFake) -> None:
    request = translate({**ANTHROPIC_BODY, "tools": []}, stream=False)
    response = post(fake, request, stream=False)
    message = from_response(response.json(), model="openai/gpt-5.5-pro", provider="openai")
    assert fake.responses_requests == [request]
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert message["content"][1]["text"] == "Hello from the Responses fake."
    assert message["usage"] == {"input_tokens": 21, "output_tokens": 300, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}


def test_a_request_without_thinking_gets_no_thinking_block_back(fake: ResponsesFake) -> None:
    body = {**ANTHROPIC_BODY, "tools": [], "output_config": {"effort": "low"}}
    del body["thinking"]
    request = translate(body, stream=False)
    assert request["reasoning"] == {"effort": "low"}  # the model still reasons, as it was asked to
    message = from_response(post(fake, request, stream=False).json(), model="openai/gpt-5.5-pro", provider="openai")
    assert [b["type"] for b in message["content"]] == ["text"]
    events = stream_through(fake, translate(body, stream=True))
    assert [b.type for b in assemble_message(events).content] == ["text"]


def test_two_tool_turns_carry_the_encrypted_reasoning_back_statelessly(fake: ResponsesFake) -> None:
    fake.enqueue(responses_stream(Script(items=[
        Reasoning(summary=[["Need the ", "weather."]], encrypted_content="gAAAAFirstTurnSecret", id="rs_turn1"),
        FunctionCall("call_w", "get_weather", ['{"city"', ': "Paris"}'])])))
    first = assemble_message(stream_through(fake, translate({**ANTHROPIC_BODY, "stream": True}, stream=True)))
    assert [b.type for b in first.content] == ["thinking", "tool_use"] and first.stop_reason == "tool_use"
    assert "gAAAAFirstTurnSecret" not in first.content[0].signature  # carried, but not in the clear

    second_body = {**ANTHROPIC_BODY, "messages": [
        *ANTHROPIC_BODY["messages"],
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w", "content": "18°C"}]}]}
    second = assemble_message(stream_through(fake, translate(second_body, stream=True)))
    assert second.content[-1].text == "Hello from the Responses fake."
    sent = fake.responses_requests[1]["input"]
    assert sent[1:] == [
        {"type": "reasoning", "id": "rs_turn1", "encrypted_content": "gAAAAFirstTurnSecret",
         "summary": [{"type": "summary_text", "text": "Need the weather."}]},
        {"type": "function_call", "call_id": "call_w", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_w", "output": "18°C"}]


def test_upstream_errors_map_with_their_retry_after(fake: ResponsesFake) -> None:
    fake.enqueue(rate_limited(retry_after=7))
    response = post(fake, translate(ANTHROPIC_BODY, stream=False), stream=False)
    assert map_error(response.status_code, response.content)[:2] == (429, "rate_limit_error")
    assert response.headers["retry-after"] == "7"


def test_stream_cut_by_the_upstream_ends_in_an_error_event(fake: ResponsesFake) -> None:
    fake.enqueue(responses_stream(Script(items=[Text.of("Half an ans")], end=False), cut=True))
    translator = ResponsesStreamTranslator(model="m", provider="openai", message_id="msg_cut")
    raw: list[bytes] = []
    try:
        with httpx.stream("POST", responses_url(fake.url + "/v1"), json=translate(ANTHROPIC_BODY, stream=True),
                          headers=upstream_headers(api_key=KEY, stream=True)) as response:
            for piece in response.iter_raw():
                raw += translator.feed(piece)
        raw += translator.finish()
    except httpx.HTTPError as error:  # how the cut shows depends on timing; either way the client is told
        raw += translator.error(f"upstream connection lost: {type(error).__name__}")
    events = anthropic_events(raw)
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error"
