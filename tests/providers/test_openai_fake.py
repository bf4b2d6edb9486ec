"""The OpenAI fake over real loopback HTTP: what it sends is what the official `openai` SDK reads, and
the translators round-trip through it the way the gateway will use them."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import openai.types.chat
import pytest

from providers.openai_chat import (
    ChatOptions,
    ChatStreamTranslator,
    chat_completions_url,
    from_chat_response,
    map_error,
    to_chat_request,
    upstream_headers,
)
from tests.fakes.openai import (
    OpenAIFake,
    StreamScript,
    ToolCall,
    anthropic_events,
    assemble_message,
    chat_json,
    chat_stream,
    rate_limited,
)

KEY = "sk-test-upstream-key-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIFake]:
    with OpenAIFake(api_key=KEY, prompt_tokens=21) as fake:
        yield fake


@pytest.fixture
def fake(server: OpenAIFake) -> OpenAIFake:
    server.reset()
    return server


@pytest.fixture
def client(fake: OpenAIFake) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0)


def sse_payloads(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


def test_auto_reply_is_a_valid_chat_completion_counting_max_tokens(fake: OpenAIFake, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", max_completion_tokens=40,
                                                messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == "Hello from the OpenAI fake."
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (21, 40)
    raw = httpx.post(fake.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                     json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    openai.types.chat.ChatCompletion.model_validate_json(raw.content)


def test_auto_reply_streams_valid_chunks_with_usage_when_asked(fake: OpenAIFake, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", max_tokens=9, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Hi"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the OpenAI fake."
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9
    with httpx.stream("POST", fake.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as response:
        payloads = sse_payloads(response.read())
        assert response.headers["content-type"].startswith("text/event-stream")
    assert payloads[-1] == b"[DONE]"
    for payload in payloads[:-1]:
        chunk = openai.types.chat.ChatCompletionChunk.model_validate_json(payload)
        assert chunk.usage is None  # not asked for
    assert len(payloads) > 3


def test_scripted_replies_validate_as_openai_objects(fake: OpenAIFake, client: openai.OpenAI) -> None:
    fake.enqueue(chat_json(None, finish_reason="tool_calls", reasoning="plan",
                           tool_calls=[ToolCall("call_1", "get_weather", '{"city":"Paris"}')]),
                 chat_stream(text=["a", "b"], reasoning=["r"], tool_calls=[ToolCall("call_2", "f", ["{", "}"])],
                             finish_reason="tool_calls", ascii_only=True))
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.tool_calls[0].function.arguments == '{"city":"Paris"}'
    chunks = list(client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": "Hi"}]))
    assert chunks[-1].usage.prompt_tokens == 12
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_fake_refuses_a_request_the_schema_refuses(fake: OpenAIFake, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", messages=[{"role": "human", "content": "Hi"}])
    assert "messages/0" in raised.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], tool_choice="any")


def test_fake_refuses_a_wrong_key(fake: OpenAIFake) -> None:
    client = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-someone-else-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])


def test_auto_reply_calls_the_tool_the_request_forces(fake: OpenAIFake, client: openai.OpenAI) -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    completion = client.chat.completions.create(model="m", tools=tools, tool_choice="required",
                                                messages=[{"role": "user", "content": "Weather?"}])
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"


# -- the translators against the fake, as the gateway will use them ------------------------------

ANTHROPIC_BODY = {"model": "openai/gpt-4o-mini", "max_tokens": 30, "system": "Be brief.",
                  "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
                  "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}


def post(fake: OpenAIFake, request: dict[str, Any], *, stream: bool) -> httpx.Response:
    return httpx.post(chat_completions_url(fake.url + "/v1/"), json=request,
                      headers=upstream_headers(api_key=KEY, stream=stream))


def test_json_round_trip_through_the_fake(fake: OpenAIFake) -> None:
    request, dropped = to_chat_request(ANTHROPIC_BODY, upstream_model="gpt-4o-mini", options=ChatOptions(),
                                       stream=False)
    response = post(fake, request, stream=False)
    message = from_chat_response(response.json(), model="openai/gpt-4o-mini", provider="openai")
    assert fake.chat_requests == [request] and dropped == []
    assert message["content"] == [{"type": "text", "text": "Hello from the OpenAI fake."}]
    assert message["usage"] == {"input_tokens": 21, "output_tokens": 30, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}


def test_stream_round_trip_through_the_fake_in_network_sized_pieces(fake: OpenAIFake) -> None:
    fake.enqueue(chat_stream(text=["Let me ", "check."], finish_reason="tool_calls",
                             tool_calls=[ToolCall("call_w", "get_weather", ['{"city"', ': "Paris"}'])]))
    request, _ = to_chat_request({**ANTHROPIC_BODY, "stream": True}, upstream_model="gpt-4o-mini",
                                 options=ChatOptions(), stream=True)
    translator = ChatStreamTranslator(model="openai/gpt-4o-mini", provider="openai", message_id="msg_rt")
    raw: list[bytes] = []
    with httpx.stream("POST", chat_completions_url(fake.url + "/v1"), json=request,
                      headers=upstream_headers(api_key=KEY, stream=True)) as response:
        for piece in response.iter_raw(chunk_size=7):
            raw += translator.feed(piece)
    raw += translator.finish()
    message = assemble_message(anthropic_events(raw))
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"} and message.stop_reason == "tool_use"
    assert fake.chat_requests[0]["stream_options"] == {"include_usage": True}


def test_stream_cut_by_the_upstream_ends_in_an_error_event(fake: OpenAIFake) -> None:
    fake.enqueue(chat_stream(StreamScript(text=["Half an ans"], finish_reason=None), cut=True))
    request, _ = to_chat_request(ANTHROPIC_BODY, upstream_model="gpt-4o-mini", options=ChatOptions(), stream=True)
    translator = ChatStreamTranslator(model="m", provider="openai", message_id="msg_cut")
    raw: list[bytes] = []
    try:
        with httpx.stream("POST", chat_completions_url(fake.url + "/v1"), json=request,
                          headers=upstream_headers(api_key=KEY, stream=True)) as response:
            for piece in response.iter_raw():
                raw += translator.feed(piece)
        raw += translator.finish()
    except httpx.HTTPError as error:  # how the cut shows depends on timing; either way the client is told
        raw += translator.error(f"upstream connection lost: {type(error).__name__}")
    events = anthropic_events(raw)
    assert events[-1]["type"] == "error" and events[0]["type"] == "message_start"


def test_upstream_rate_limit_maps_with_its_retry_after(fake: OpenAIFake) -> None:
    fake.enqueue(rate_limited(retry_after=7))
    request, _ = to_chat_request(ANTHROPIC_BODY, upstream_model="gpt-4o-mini", options=ChatOptions(), stream=False)
    response = post(fake, request, stream=False)
    assert map_error(response.status_code, response.content)[:2] == (429, "rate_limit_error")
    assert response.headers["retry-after"] == "7"
