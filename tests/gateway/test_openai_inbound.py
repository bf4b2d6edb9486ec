"""OpenAI's chat completions and Responses APIs served by `gateway serve`, driven with the official
`openai` SDK, to a model on an Anthropic-protocol upstream (the Anthropic fake).

The test model prices input at 0 and output at $100 per million tokens, and the fake answers with
exactly `max_tokens` output tokens unless scripted, so a budget admits an exact number of requests.
"""
from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import yaml

from policies.tokens import chars_per_token
from tests.fakes.anthropic import AnthropicFake, event, json_reply, message_body, sse_reply, stream_events
from tests.fakes import openai_responses as r
from tests.fakes.openai import (OpenAIFake, StreamScript, ToolCall, Usage, chat_json, chat_stream,
                                context_length_exceeded, rate_limited, server_error)
from tests.gateway_server import GatewayThread
from tests.served_process import ServedProcess

KEY = "sk-team-chat-0001"
BUDGET_KEY = "sk-team-budget-0001"
RPM_KEY = "sk-team-rpm-0001"
ADMIN = "sk-admin-inbound-0001"
MODEL = "test/chat"
GPT = "test/gpt"  # served by an OpenAI-compatible upstream
GPT_FIRST = "test/gpt-first"  # the OpenAI upstream first, the Anthropic one if it fails
PRO = "test/pro"  # served by a Responses-protocol upstream
PRO_FIRST = "test/pro-first"  # the Responses upstream first, the Anthropic one if it fails
RESPONSES_KEY = "sk-upstream-secret-responses"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


@pytest.fixture(scope="module")
def upstream():
    with AnthropicFake() as fake:
        yield fake


@pytest.fixture(scope="module")
def openai_upstream():
    with OpenAIFake(api_key="sk-upstream-secret-openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def responses_upstream():
    with r.ResponsesFake(api_key=RESPONSES_KEY) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(upstream, openai_upstream, responses_upstream):
    upstream.reset()
    openai_upstream.reset()
    responses_upstream.reset()


def gpt_endpoint(model: str) -> dict:
    return {"provider": "openai", "upstream_model": model, "pricing": {"input": 0.0, "output": 100.0}}


@pytest.fixture(scope="module")
def served(upstream, openai_upstream, responses_upstream, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inbound")
    config = {
        "admin_key": ADMIN,
        "providers": {"anthropic": {"base_url": upstream.url, "api_key": "sk-upstream-secret-inbound"},
                      "openai": {"base_url": openai_upstream.url + "/v1", "api_key": "sk-upstream-secret-openai"},
                      "oresp": {"protocol": "openai-responses", "base_url": responses_upstream.url + "/v1",
                                "api_key": RESPONSES_KEY}},
        "models": [{"id": MODEL, "display_name": "Chat test", "context_length": 100_000, "max_output": 8192,
                    "endpoints": [{"provider": "anthropic", "upstream_model": "claude-upstream",
                                   "pricing": {"input": 0.0, "output": 100.0}}]},
                   {"id": GPT, "endpoints": [gpt_endpoint("gpt-upstream")]},
                   {"id": GPT_FIRST, "endpoints": [
                       gpt_endpoint("gpt-upstream"),
                       {"provider": "anthropic", "upstream_model": "claude-upstream",
                        "pricing": {"input": 0.0, "output": 100.0}}]},
                   {"id": PRO, "endpoints": [{"provider": "oresp", "upstream_model": "pro-upstream",
                                              "pricing": {"input": 0.0, "output": 100.0}}]},
                   {"id": PRO_FIRST, "endpoints": [
                       {"provider": "oresp", "upstream_model": "pro-upstream", "pricing": {"input": 0.0, "output": 100.0}},
                       {"provider": "anthropic", "upstream_model": "claude-upstream",
                        "pricing": {"input": 0.0, "output": 100.0}}]}],
        "teams": [{"name": "chat"}, {"name": "budget", "budget_daily_usd": 0.03}, {"name": "rpm", "rpm": 1}],
        "keys": [{"key": KEY, "team": "chat"}, {"key": BUDGET_KEY, "team": "budget"}, {"key": RPM_KEY, "team": "rpm"}],
        "retries": {"per_endpoint": 1},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with ServedProcess(["--config", str(path)], env={"GATEWAY_DATA_DIR": str(folder / "data")}) as process:
        yield process


def client(served, key: str = KEY, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=options.pop("max_retries", 0),
                         **options)


def tool_call_events(call_id: str, name: str, fragments: list[str], *, input_tokens: int = 12,
                     cache_read: int = 30) -> list[bytes]:
    start = {"type": "message_start", "message": {
        "id": "msg_tool01", "type": "message", "role": "assistant", "model": "claude-upstream", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read,
                  "output_tokens": 1}}}
    events = [event("message_start", start),
              event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}}),
              event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": "Checking."}}),
              event("content_block_stop", {"type": "content_block_stop", "index": 0}),
              event("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                  "type": "tool_use", "id": call_id, "name": name, "input": {}}})]
    events += [event("content_block_delta", {"type": "content_block_delta", "index": 1,
                                             "delta": {"type": "input_json_delta", "partial_json": f}})
               for f in fragments]
    events += [event("content_block_stop", {"type": "content_block_stop", "index": 1}),
               event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use",
                                                                           "stop_sequence": None},
                                       "usage": {"output_tokens": 20}}),
               event("message_stop", {"type": "message_stop"})]
    return events


# -- chat completions ------------------------------------------------------------------------------

def test_create_answers_a_chat_completion_with_usage_and_cached_tokens(served, upstream):
    upstream.enqueue(json_reply(message_body("Hello there.", input_tokens=7, cache_read=5, output_tokens=3)))
    completion = client(served).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "developer", "content": "Answer in English."},
                               {"role": "user", "content": "Hi"}],
        max_completion_tokens=50, stop=["END"], temperature=0.5, user="end-user-7")
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello there."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 12 and completion.usage.completion_tokens == 3
    assert completion.usage.prompt_tokens_details.cached_tokens == 5
    sent = upstream.requests[-1].json()
    assert sent["system"] == "Be brief.\n\nAnswer in English."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert sent["max_tokens"] == 50 and sent["stop_sequences"] == ["END"] and sent["temperature"] == 0.5
    assert sent["metadata"] == {"user_id": "end-user-7"} and sent["model"] == "claude-upstream"
    assert "user" not in sent  # the router field is the gateway's, never the upstream's


def test_stream_sends_chunks_ending_with_done(served, upstream):
    upstream.enqueue(sse_reply(stream_events(["Hel", "lo"], input_tokens=9, output_tokens=2)))
    with httpx.stream("POST", served.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "Hi"}]}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 9
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_stream_without_include_usage_shows_no_usage_chunk(served, upstream):
    upstream.enqueue(sse_reply(stream_events(["Hi"])))
    stream = client(served).chat.completions.create(model=MODEL, stream=True,
                                                    messages=[{"role": "user", "content": "Hi"}])
    chunks = list(stream)
    assert all(c.usage is None and c.choices for c in chunks)
    assert upstream.requests[-1].json()["stream"] is True


def test_a_stream_answered_whole_by_the_upstream_still_reaches_the_client_as_a_stream(served, upstream):
    upstream.enqueue(json_reply(message_body("Whole answer.", output_tokens=2)))
    chunks = list(client(served).chat.completions.create(model=MODEL, stream=True,
                                                         stream_options={"include_usage": True},
                                                         messages=[{"role": "user", "content": "Hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Whole answer."
    assert chunks[-1].usage.completion_tokens == 2


def test_streamed_tool_call_then_tool_message_reaches_the_upstream_as_tool_result(served, upstream):
    upstream.enqueue(sse_reply(tool_call_events("toolu_01", "get_weather", ['{"city": ', '"Paris"}'])))
    sdk = client(served)
    stream = sdk.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                         tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False,
                                         messages=[{"role": "user", "content": "Weather in Paris?"}])
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert calls[0].id == "toolu_01" and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.prompt_tokens == 42 and chunks[-1].usage.prompt_tokens_details.cached_tokens == 30
    first = upstream.requests[-1].json()
    assert first["tools"] == [{"name": "get_weather", "description": "Current weather",
                               "input_schema": WEATHER["function"]["parameters"]}]
    assert first["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}

    upstream.enqueue(json_reply(message_body("It is sunny in Paris.")))
    answer = sdk.chat.completions.create(model=MODEL, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny, 21 C"}])
    assert answer.choices[0].message.content == "It is sunny in Paris."
    second = upstream.requests[-1].json()
    assert second["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]}
    assert second["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 21 C"}]}


def test_tool_call_answer_as_json(served, upstream):
    upstream.enqueue(json_reply(message_body(stop_reason="tool_use", content=[
        {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Oslo"}}])))
    completion = client(served).chat.completions.create(
        model=MODEL, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Oslo?"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].id == "toolu_02"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert upstream.requests[-1].json()["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_response_format_json_schema_is_a_forced_tool_answered_as_content(served, upstream):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    upstream.enqueue(json_reply(message_body(stop_reason="tool_use", content=[
        {"type": "tool_use", "id": "toolu_03", "name": "json_output", "input": {"answer": 4}}])))
    completion = client(served).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "2+2?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema, "strict": True}})
    assert json.loads(completion.choices[0].message.content) == {"answer": 4}
    assert completion.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1].json()
    assert sent["tools"][0]["input_schema"] == schema
    assert sent["tool_choice"] == {"type": "tool", "name": "json_output"}


def test_reasoning_effort_becomes_thinking_and_comes_back_as_reasoning_content(served, upstream):
    upstream.enqueue(json_reply(message_body(content=[
        {"type": "thinking", "thinking": "Two and two.", "signature": "sig"}, {"type": "text", "text": "4"}])))
    completion = client(served).chat.completions.create(model=MODEL, reasoning_effort="medium",
                                                        messages=[{"role": "user", "content": "2+2?"}])
    message = completion.choices[0].message
    assert message.content == "4" and message.model_extra["reasoning_content"] == "Two and two."
    sent = upstream.requests[-1].json()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] > 4096


def test_image_parts_reach_the_upstream_as_image_blocks(served, upstream):
    upstream.enqueue(json_reply(message_body("A picture.")))
    client(served).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    assert upstream.requests[-1].json()["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]


def test_bad_key_is_an_authentication_error(served):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(served, "sk-not-a-key-0000").chat.completions.create(model=MODEL, messages=[{"role": "user",
                                                                                             "content": "Hi"}])
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.code == "invalid_api_key"
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_unknown_model_is_not_found(served, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        client(served).chat.completions.create(model="nobody/nothing", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.code == "model_not_found" and "nobody/nothing" in caught.value.message
    assert upstream.requests == []


@pytest.mark.parametrize("extra, param", [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")])
def test_what_the_gateway_cannot_honour_is_a_clear_400(served, upstream, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], **extra)
    assert caught.value.param == param and caught.value.body["message"].startswith(param)
    assert upstream.requests == []


def test_malformed_body_is_a_400_in_openai_envelope(served):
    response = httpx.post(served.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                          content=b"{not json")
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_rate_limit_is_a_rate_limit_error_with_openai_headers(served, upstream):
    sdk = client(served, RPM_KEY)
    first = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.code == "rate_limit_exceeded"


def test_budget_shared_with_messages_traffic_is_refused_without_retries(served, upstream):
    """$0.03 a day, $0.01 a request: a Messages request, a chat completion and a Responses call spend
    it; the next chat completion is refused, and the SDK (allowed retries) does not try again."""
    ask = {"max_tokens": 100}
    anthropic.Anthropic(base_url=served.url, api_key=BUDGET_KEY, max_retries=0).messages.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], **ask)
    sdk = client(served, BUDGET_KEY, max_retries=3)
    sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=100)
    sdk.responses.create(model=MODEL, input="Hi", max_output_tokens=100)
    seen = len(upstream.requests)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=100)
    assert time.monotonic() - started < 2  # no retry waited out a retry-after
    assert caught.value.code == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == seen
    assert served.wait_for(lambda line: "POST /v1/chat/completions 429" in line and "team=budget" in line)

    deadline = time.monotonic() + 10
    while True:  # records reach the store in batches
        rows = httpx.get(served.url + "/admin/requests", params={"team": "budget"},
                         headers={"x-api-key": ADMIN}).json()["data"]
        if len(rows) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_protocol = sorted((r.get("inbound"), r["status"]) for r in rows)
    assert by_protocol == [("messages", 200), ("openai_chat", 200), ("openai_chat", 429), ("openai_responses", 200)]
    metrics = httpx.get(served.url + "/metrics").text
    costs = [line for line in metrics.splitlines()
             if line.startswith("gateway_cost_usd_total{") and 'team="budget"' in line]
    assert costs and abs(float(costs[0].rsplit(" ", 1)[1]) - 0.03) < 1e-9
    requests = [line for line in metrics.splitlines()
                if line.startswith("gateway_requests_total{") and 'team="budget"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in requests) == 4


# -- chat completions to an OpenAI-compatible upstream: passed through ------------------------------

def test_to_an_openai_upstream_the_clients_bytes_pass_through_but_model_router_fields_and_stream_options(
        served, openai_upstream):
    openai_upstream.enqueue(chat_stream(StreamScript(
        text=["Let me check."], tool_calls=[ToolCall(id="call_abc", name="get_weather", arguments=['{"city": ', '"Paris"}'])],
        finish_reason="tool_calls", usage=Usage(prompt_tokens=30, completion_tokens=7, cached_tokens=10))))
    messages = b'[ {"role": "user",   "content": "Weather in Paris?"} ]'
    tools = json.dumps([WEATHER]).encode()
    body = (b'{"model": "test/gpt", "messages": ' + messages + b', "tools": ' + tools + b', "seed": 7, '
            b'"stream": true, "session_id": "s-1", "trace": {"job": "nightly"}}')
    with httpx.stream("POST", served.url + "/v1/chat/completions", content=body, timeout=30,
                      headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"}) as response:
        assert response.status_code == 200 and response.headers["x-gateway-provider"] == "openai"
        data = [line for line in response.iter_lines() if line]
    sent = openai_upstream.requests[-1]
    assert messages in sent.body and tools in sent.body  # the client's bytes, spacing and all
    assert sent.json() == {"model": "gpt-upstream", "messages": json.loads(messages), "tools": [WEATHER], "seed": 7,
                           "stream": True, "stream_options": {"include_usage": True}}
    assert data[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in data[:-1]]
    assert all(c["choices"] for c in chunks)  # the usage chunk the client did not ask for is not shown
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls[0]["id"] == "call_abc" and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_upstream_usage_is_counted_and_shown_to_a_client_that_asks(served, openai_upstream):
    openai_upstream.enqueue(chat_stream(StreamScript(text=["Hi"], usage=Usage(prompt_tokens=20, completion_tokens=3))))
    stream = client(served).chat.completions.create(model=GPT, stream=True, stream_options={"include_usage": True},
                                                    messages=[{"role": "user", "content": "Hi"}])
    chunks = list(stream)
    assert chunks[-1].usage.prompt_tokens == 20 and chunks[-1].usage.completion_tokens == 3
    assert openai_upstream.chat_requests[-1]["stream_options"] == {"include_usage": True}
    # Every chunk names the router's model and the provider, as every answer does; the usage its cost.
    assert {c.model for c in chunks} == {GPT} and {c.model_extra["provider"] for c in chunks} == {"openai"}
    assert chunks[-1].usage.model_extra["cost"] == pytest.approx(3 * 100.0 / 1e6)
    row = record_of(served, stream.response.headers["x-request-id"])
    assert row["inbound"] == "openai_chat" and row["provider"] == "openai"
    assert row["input_tokens"] == 20 and row["output_tokens"] == 3


def record_of(served, request_id: str, team: str = "chat") -> dict:
    deadline = time.monotonic() + 10
    while True:  # records reach the store in batches
        rows = httpx.get(served.url + "/admin/requests", params={"team": team},
                         headers={"x-api-key": ADMIN}).json()["data"]
        row = next((r for r in rows if r["request_id"] == request_id), None)
        if row is not None or time.monotonic() > deadline:
            return row
        time.sleep(0.2)


def test_a_passed_through_stream_cut_before_its_usage_is_counted_from_the_text_the_client_got(
        served, openai_upstream):
    text = ["abcdefgh"] * 5 + ["café 世界"]  # sent as \uXXXX escapes, as some servers do
    openai_upstream.enqueue(chat_stream(StreamScript(text=text, finish_reason=None, usage=None, ascii_only=True),
                                        cut=True))
    with httpx.stream("POST", served.url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {KEY}"},
                      json={"model": GPT, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as response:
        lines = [line for line in response.iter_lines() if line]
        request_id = response.headers["x-request-id"]
    assert "broke off" in json.loads(lines[-1][6:])["error"]["message"]
    row = record_of(served, request_id)
    assert row["status"] == 502 and row["inbound"] == "openai_chat"
    # The generic estimate of 44 ASCII characters, and a token for each of the 3 others.
    assert row["output_tokens"] == math.ceil(44 / chars_per_token("generic")) + 3


def test_openai_upstream_json_answer_is_the_upstreams(served, openai_upstream):
    openai_upstream.enqueue(chat_json("From GPT.", id="chatcmpl-upstream1", usage=Usage(prompt_tokens=5,
                                                                                         completion_tokens=2)))
    completion = client(served).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Hi"}],
                                                        logit_bias={"50256": -100})
    assert completion.id == "chatcmpl-upstream1" and completion.choices[0].message.content == "From GPT."
    assert openai_upstream.chat_requests[-1]["logit_bias"] == {"50256": -100}
    # Labelled as every answer is: the router's model, the provider, and the cost in the usage.
    assert completion.model == GPT and completion.model_extra["provider"] == "openai"
    assert completion.usage.model_extra["cost"] == pytest.approx(2 * 100.0 / 1e6)
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 2


def test_a_failed_openai_upstream_falls_back_to_the_anthropic_one_translated(served, upstream, openai_upstream):
    openai_upstream.enqueue(server_error())
    upstream.enqueue(json_reply(message_body("From Claude.")))
    completion = client(served).chat.completions.with_raw_response.create(
        model=GPT_FIRST, messages=[{"role": "user", "content": "Hi"}],
        extra_body={"provider": {"order": ["openai", "anthropic"]}})  # the router's own extension
    assert completion.headers["x-gateway-attempts"] == "openai/test/gpt-first=500,anthropic/test/gpt-first=ok"
    assert completion.parse().choices[0].message.content == "From Claude."
    assert upstream.requests[-1].json()["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_openai_upstream_error_reaches_the_sdk_in_openais_envelope(served, openai_upstream):
    openai_upstream.enqueue(server_error())
    with pytest.raises(openai.APIStatusError) as caught:
        client(served).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 502 and caught.value.body["type"] == "server_error"
    assert "sk-upstream-secret-openai" not in caught.value.response.text


def test_openai_upstream_refusals_reach_the_sdk_as_openais_errors(served, openai_upstream):
    openai_upstream.enqueue(context_length_exceeded())
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Hi"}])
    assert "maximum context length" in caught.value.message and caught.value.type == "invalid_request_error"
    openai_upstream.enqueue(rate_limited(retry_after=1))
    with pytest.raises(openai.RateLimitError) as caught:
        client(served).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.response.headers["retry-after"] == "1" and caught.value.code == "rate_limit_exceeded"


# -- responses ------------------------------------------------------------------------------------

def test_responses_create_translates_input_items_and_answers_a_response(served, upstream):
    upstream.enqueue(json_reply(message_body("Paris is sunny.", input_tokens=11, output_tokens=4)))
    response = client(served).responses.create(
        model=MODEL, instructions="Be brief.", store=False, max_output_tokens=64, tools=[
            {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}],
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
               {"type": "function_call", "call_id": "toolu_9", "name": "get_weather", "arguments": '{"city":"Paris"}'},
               {"type": "function_call_output", "call_id": "toolu_9", "output": "sunny"}])
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Paris is sunny."
    assert response.usage.input_tokens == 11 and response.usage.output_tokens == 4
    sent = upstream.requests[-1].json()
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 64
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny"}]}]


def test_responses_stream_follows_the_event_sequence(served, upstream):
    upstream.enqueue(sse_reply(tool_call_events("toolu_05", "get_weather", ['{"city":', '"Rome"}'])))
    with client(served).responses.stream(model=MODEL, input="Rome?", tools=[
            {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert final.output_text == "Checking."
    call = final.output[1]
    assert call.type == "function_call" and call.call_id == "toolu_05" and json.loads(call.arguments) == {"city": "Rome"}
    assert final.usage.input_tokens == 42


def test_responses_to_an_openai_chat_upstream_go_through_the_canonical_request(served, openai_upstream):
    openai_upstream.enqueue(chat_json("From GPT.", usage=Usage(prompt_tokens=9, completion_tokens=2)))
    response = client(served).responses.create(model=GPT, instructions="Be brief.", input="Hi", max_output_tokens=40)
    assert response.output_text == "From GPT." and response.usage.input_tokens == 9
    sent = openai_upstream.chat_requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert sent["max_tokens"] == 40 and sent["model"] == "gpt-upstream"


def test_responses_to_a_responses_upstream_pass_the_clients_bytes_with_store_off(served, responses_upstream):
    responses_upstream.enqueue(r.responses_json(r.Script(items=[r.Text.of("From Pro.")], id="resp_upstream1",
                                                         usage=r.Usage(input_tokens=30, output_tokens=4,
                                                                       cached_tokens=10))))
    items = b'[ {"role": "user",  "content": "Hi"} ]'
    body = (b'{"model": "test/pro", "input": ' + items + b', "instructions": "Be brief.", '
            b'"max_output_tokens": 64, "trace": {"job": "nightly"}}')
    answer = httpx.post(served.url + "/v1/responses", content=body, timeout=30,
                        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert answer.status_code == 200 and answer.headers["x-gateway-provider"] == "oresp"
    assert answer.json()["id"] == "resp_upstream1"  # the upstream's own answer
    assert answer.json()["output"][0]["content"][0]["text"] == "From Pro."
    assert (answer.json()["model"], answer.json()["provider"]) == (PRO, "oresp")
    assert answer.json()["usage"]["cost"] == pytest.approx(4 * 100.0 / 1e6)
    sent = responses_upstream.requests[-1]
    assert items in sent.body
    assert sent.json() == {"model": "pro-upstream", "input": json.loads(items), "instructions": "Be brief.",
                           "max_output_tokens": 64, "store": False}
    row = record_of(served, answer.headers["x-request-id"])
    assert (row["inbound"], row["provider"], row["input_tokens"], row["output_tokens"]) == \
        ("openai_responses", "oresp", 20, 4)


def test_responses_stream_from_a_responses_upstream_is_the_upstreams(served, responses_upstream):
    responses_upstream.enqueue(r.responses_stream(r.Script(items=[
        r.Text.of("Let me ", "check."), r.FunctionCall(call_id="call_r1", name="get_weather",
                                                       arguments=['{"city": ', '"Rome"}'])],
        usage=r.Usage(input_tokens=50, output_tokens=9))))
    with client(served).responses.stream(model=PRO, input="Rome?", store=False, tools=[
            {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"],
             "strict": False}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds == [p["type"] for p in r.stream_payloads(r.Script(items=[
        r.Text.of("Let me ", "check."), r.FunctionCall(call_id="call_r1", name="get_weather",
                                                       arguments=['{"city": ', '"Rome"}'])]))]
    assert final.id == "resp_fake0001" and final.output_text == "Let me check."
    assert final.model == PRO and final.model_extra["provider"] == "oresp"
    assert final.usage.model_extra["cost"] == pytest.approx(9 * 100.0 / 1e6)
    assert final.output[1].call_id == "call_r1" and final.usage.input_tokens == 50
    sent = responses_upstream.responses_requests[-1]
    assert sent["stream"] is True and sent["store"] is False and sent["model"] == "pro-upstream"


def streamed_responses(served) -> tuple[list[str], str]:
    """The lines of a streamed Responses call to the Responses upstream, and its request id."""
    with httpx.stream("POST", served.url + "/v1/responses", timeout=30, headers={"authorization": f"Bearer {KEY}"},
                      json={"model": PRO, "stream": True, "input": "Hi"}) as response:
        return [line for line in response.iter_lines() if line], response.headers["x-request-id"]


def test_a_passed_through_responses_stream_cut_short_ends_with_its_error_event_and_is_metered(
        served, responses_upstream):
    responses_upstream.enqueue(r.responses_stream(r.Script(items=[r.Text.of("abcdefgh", "abcdefgh")], end=False),
                                                  cut=True))
    lines, request_id = streamed_responses(served)
    assert lines[-2] == "event: error"
    error = json.loads(lines[-1][6:])
    assert "broke off" in error["message"] and error["type"] == "error"
    assert error["sequence_number"] == json.loads(lines[-3][6:])["sequence_number"] + 1
    row = record_of(served, request_id)
    assert row["status"] == 502 and row["output_tokens"] == math.ceil(16 / chars_per_token("generic"))


def test_a_responses_upstreams_own_error_event_midway_reaches_the_client_as_it_came(served, responses_upstream):
    responses_upstream.enqueue(r.responses_stream(r.Script(items=[r.Text.of("a", "b")], error_event={
        "code": "server_error", "message": f"The model failed ({RESPONSES_KEY})"}), delay_between=0.05))
    lines, request_id = streamed_responses(served)
    assert lines[-2] == "event: error"
    error = json.loads(lines[-1][6:])
    assert error["code"] == "server_error" and error["message"].startswith("The model failed (")
    assert RESPONSES_KEY not in "".join(lines)
    assert record_of(served, request_id)["status"] == 502


def test_a_failed_responses_upstream_falls_back_to_the_anthropic_one_translated(served, upstream, responses_upstream):
    responses_upstream.enqueue(r.server_error())
    upstream.enqueue(json_reply(message_body("From Claude.")))
    response = client(served).responses.with_raw_response.create(
        model=PRO_FIRST, input="Hi", store=False, extra_body={"provider": {"order": ["oresp", "anthropic"]}})
    assert response.headers["x-gateway-attempts"] == "oresp/test/pro-first=500,anthropic/test/pro-first=ok"
    assert response.parse().output_text == "From Claude."


@pytest.mark.parametrize("extra, param", [({"store": True}, "store"), ({"previous_response_id": "resp_1"},
                                                                      "previous_response_id")])
def test_responses_state_is_refused_as_the_gateway_is_stateless(served, upstream, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).responses.create(model=MODEL, input="Hi", **extra)
    assert "stateless" in caught.value.message and caught.value.param == param
    assert upstream.requests == []


# -- models ---------------------------------------------------------------------------------------

def test_models_list_is_openai_shaped_for_openai_clients_and_anthropic_shaped_otherwise(served):
    models = {m.id: m for m in client(served).models.list().data}
    assert models[MODEL].object == "model" and models[MODEL].owned_by == "test"
    assert models["anthropic/claude-opus-4.5"].owned_by == "anthropic" and models["anthropic/claude-opus-4.5"].created > 0
    native = httpx.get(served.url + "/v1/models", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}).json()
    assert native["data"][0]["type"] == "model" and "has_more" in native
    with pytest.raises(openai.AuthenticationError):
        client(served, "sk-not-a-key-0000").models.list()
    one = client(served).models.retrieve(MODEL)
    assert (one.id, one.object, one.owned_by) == (MODEL, "model", "test")
    with pytest.raises(openai.NotFoundError):
        client(served).models.retrieve("nobody/nothing")


# -- the official OpenAI Node SDK -----------------------------------------------------------------

NODE_SDK = Path(__file__).resolve().parent / ".npm" / "node_modules" / "openai"


@pytest.mark.skipif(shutil.which("node") is None or not NODE_SDK.is_dir(),
                    reason="the openai npm package is not installed (scripts/test.sh installs it)")
def test_the_official_node_sdk_creates_streams_tool_calls_and_sees_openai_errors(served, upstream):
    upstream.enqueue(json_reply(message_body("Hello from Node.", input_tokens=4, output_tokens=3)),
                     sse_reply(tool_call_events("toolu_n1", "get_weather", ['{"city":', '"Lima"}'])))
    run = subprocess.run(["node", str(Path(__file__).with_name("openai_node_client.cjs"))], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "OPENAI_MODULE": str(NODE_SDK),
                                                     "BASE_URL": served.url + "/v1", "KEY": KEY, "MODEL": MODEL})
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["create"] == {"content": "Hello from Node.", "finish": "stop", "usage": {
        "prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 0}}}
    assert seen["stream"]["calls"] == [{"id": "toolu_n1", "name": "get_weather", "arguments": '{"city":"Lima"}'}]
    assert seen["stream"]["finish"] == "tool_calls" and seen["stream"]["usage"]["prompt_tokens"] == 42
    assert seen["bad_key"] == {"class": "AuthenticationError", "status": 401, "code": "invalid_api_key"}
    assert seen["unknown_model"] == {"class": "NotFoundError", "status": 404, "code": "model_not_found"}


# -- streams that end badly -----------------------------------------------------------------------

def test_passed_through_streams_that_break_or_run_out_of_time_end_with_openais_error_chunk(openai_upstream):
    settings = {"providers": {"openai": {"base_url": openai_upstream.url + "/v1", "api_key": "sk-upstream-secret-openai"}},
                "models": [{"id": GPT, "endpoints": [gpt_endpoint("gpt-upstream")]}],
                "keys": [{"key": KEY, "team": "chat"}], "timeouts": {"total": 1.0}}
    ask = {"model": GPT, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with GatewayThread(**settings) as gw:
        for reply, message in ((chat_stream(StreamScript(text=["a", "b", "c", "d"]), delay_between=0.4), "deadline"),
                               (chat_stream(StreamScript(text=["a", "b"]), cut=True), "broke off")):
            openai_upstream.enqueue(reply)
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=ask, timeout=30,
                              headers={"authorization": f"Bearer {KEY}"}) as response:
                lines = [line for line in response.iter_lines() if line]
            assert lines[0].startswith("data: {") and "[DONE]" not in lines[-1]
            last = json.loads(lines[-1][6:])
            assert message in last["error"]["message"] and set(last["error"]) == {"message", "type", "param", "code"}
            assert not any(line.startswith("event:") for line in lines)


def test_a_passed_through_responses_stream_past_its_deadline_ends_with_the_responses_error_event(responses_upstream):
    settings = {"providers": {"oresp": {"protocol": "openai-responses", "base_url": responses_upstream.url + "/v1",
                                        "api_key": RESPONSES_KEY}},
                "models": [{"id": PRO, "endpoints": [{"provider": "oresp", "upstream_model": "pro-upstream",
                                                      "pricing": {"input": 0.0, "output": 100.0}}]}],
                "keys": [{"key": KEY, "team": "chat"}], "timeouts": {"total": 1.0}}
    responses_upstream.enqueue(r.responses_stream(r.Script(items=[r.Text.of("a", "b", "c", "d")]),
                                                  delay_between=0.2))
    with GatewayThread(**settings) as gw:
        with httpx.stream("POST", gw.url + "/v1/responses", json={"model": PRO, "stream": True, "input": "Hi"},
                          headers={"authorization": f"Bearer {KEY}"}, timeout=30) as response:
            lines = [line for line in response.iter_lines() if line]
    assert lines[0] == "event: response.created" and lines[-2] == "event: error"
    error = json.loads(lines[-1][6:])
    assert "deadline" in error["message"] and error["code"] == "timeout_error"
    assert error["sequence_number"] == json.loads(lines[-3][6:])["sequence_number"] + 1
