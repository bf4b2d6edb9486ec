"""A model routed to an OpenAI-compatible upstream, driven with the official Anthropic SDK."""
from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import TEAM_KEY
from tests.fakes.openai import OpenAIFake, StreamScript, ToolCall, Usage, chat_stream, error_reply, rate_limited
from tests.gateway_server import GatewayThread

WEATHER_TOOL = {"name": "get_weather", "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}


@pytest.fixture(scope="module")
def openai_upstream():
    with OpenAIFake(api_key="sk-upstream-secret-openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(openai_upstream):
    settings = {"providers": {"openai": {"base_url": openai_upstream.url + "/v1",
                                         "api_key": "sk-upstream-secret-openai"}},
                "keys": [{"key": TEAM_KEY, "team": "team-a"}]}
    with GatewayThread(**settings) as running:
        yield running


@pytest.fixture
def fake(openai_upstream):
    openai_upstream.reset()
    return openai_upstream


def sdk(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=TEAM_KEY, max_retries=0)


def test_streamed_tool_call_reaches_the_sdk_with_usage_and_cache_reads(gw, fake):
    fake.enqueue(chat_stream(StreamScript(
        reasoning=["Need ", "weather."],
        text=["Let me check."],
        tool_calls=[ToolCall(id="call_abc", name="get_weather", arguments=['{"ci', 'ty": "Par', 'is"}'])],
        finish_reason="tool_calls", usage=Usage(prompt_tokens=1200, completion_tokens=40, cached_tokens=1000))))
    with sdk(gw).messages.stream(model="openai/gpt-5.4", max_tokens=500, tools=[WEATHER_TOOL],
                                 messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_use = [b for b in final.content if b.type == "tool_use"][0]
    assert tool_use.input == {"city": "Paris"} and tool_use.name == "get_weather" and tool_use.id == "call_abc"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.usage.input_tokens == 200
    assert final.usage.cache_read_input_tokens == 1000
    assert final.usage.output_tokens == 40
    assert final.model == "openai/gpt-5.4"
    sent = fake.chat_requests[-1]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    assert sent["stream_options"] == {"include_usage": True}
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-upstream-secret-openai"


def test_second_turn_with_tool_result_is_translated(gw, fake):
    message = sdk(gw).messages.create(model="openai/gpt-5.4", max_tokens=50, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "call_abc", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_abc", "content": "18C, sunny"},
                                     {"type": "text", "text": "Thanks"}]},
    ])
    assert message.content[0].type == "text"
    sent = fake.chat_requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[1]["tool_calls"][0]["id"] == "call_abc"
    assert sent[2]["tool_call_id"] == "call_abc" and "18C, sunny" in str(sent[2]["content"])


def test_dropped_parameters_are_named_in_a_header(gw, fake):
    response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
        "model": "openai/gpt-5.4", "max_tokens": 20, "top_k": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert "top_k" in response.headers["x-gateway-dropped-params"]
    assert "top_k" not in fake.chat_requests[-1]


def test_require_parameters_refuses_what_the_endpoint_cannot_honour(gw, fake):
    response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
        "model": "openai/gpt-5.4", "max_tokens": 20, "top_k": 5, "provider": {"require_parameters": True},
        "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "top_k" in response.json()["error"]["message"]
    assert fake.chat_requests == []


def test_openai_rate_limit_becomes_rate_limit_error(gw, fake):
    fake.enqueue(rate_limited(retry_after=7))
    response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
        "model": "openai/gpt-5.4", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "7"


def test_openai_client_error_becomes_anthropic_envelope(gw, fake):
    fake.enqueue(error_reply(400, "Invalid value for 'messages'"))
    response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
        "model": "openai/gpt-5.4", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_openai_stream_cut_ends_with_error_event(gw, fake):
    fake.enqueue(chat_stream(StreamScript(text=["a", "b", "c"], finish_reason=None, done=False), cut=True))
    response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
        "model": "openai/gpt-5.4", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert response.content.strip().split(b"\n\n")[-1].startswith(b"event: error")
