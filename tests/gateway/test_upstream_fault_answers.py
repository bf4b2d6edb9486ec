"""Upstream faults answer alike on both protocols, as the README's error table says: an unreadable
first stream event falls back to the next provider, and an answer that goes silent after its head
is a 504 timeout_error, not a 502."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEAM_KEY
from tests.fakes.anthropic import AnthropicFake, message_body, sse_reply, stream_events
from tests.fakes.base import Reply
from tests.fakes.openai import STREAM_CONTENT_TYPE, OpenAIFake
from tests.gateway_server import GatewayThread

GARBAGE = b"\x00\xff\xfe"
IDLE_S = 0.4


@pytest.fixture(scope="module")
def upstreams():
    with AnthropicFake() as anth, AnthropicFake() as spare, OpenAIFake() as oai:
        yield {"anth": anth, "spare": spare, "oai": oai}


@pytest.fixture(scope="module")
def gw(upstreams):
    providers = {"anth": {"protocol": "anthropic", "base_url": upstreams["anth"].url, "api_key": "sk-upstream-a"},
                 "spare": {"protocol": "anthropic", "base_url": upstreams["spare"].url, "api_key": "sk-upstream-s"},
                 "oai": {"protocol": "openai", "base_url": upstreams["oai"].url + "/v1", "api_key": "sk-upstream-o"}}
    settings = {"providers": providers,
                "models": [{"id": "test/faults", "display_name": "faults", "context_length": 100000,
                            "max_output": 4096,
                            "endpoints": [{"provider": name, "upstream_model": f"{name}-model",
                                           "pricing": {"input": 1.0, "output": 5.0}} for name in providers]}],
                "keys": [{"key": TEAM_KEY, "team": "team-a"}],
                "retries": {"per_endpoint": 1},
                "cooldowns": {"failures": 1000},
                "timeouts": {"first_byte": 5, "idle": IDLE_S, "total": 20}}
    with GatewayThread(**settings) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(upstreams):
    for fake in upstreams.values():
        fake.reset()


def ask(gw, first: str, *, fallbacks: bool = True, **body) -> httpx.Response:
    payload = {"model": "test/faults", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
               "provider": {"order": [first, "spare"] if fallbacks else [first], "allow_fallbacks": fallbacks},
               **body}
    return httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=payload, timeout=20)


def garbage_stream(provider: str, then_valid: bool) -> Reply:
    if provider == "oai":
        return Reply(content_type=STREAM_CONTENT_TYPE, chunks=[b"data: " + GARBAGE + b"\n\n"])
    return sse_reply([GARBAGE + b"\n\n", *(stream_events(["late"]) if then_valid else [])])


@pytest.mark.parametrize("provider", ["anth", "oai"])
@pytest.mark.parametrize("then_valid", [False, True])
def test_a_garbage_first_stream_event_falls_back_to_the_next_provider(gw, upstreams, provider, then_valid):
    upstreams[provider].enqueue(garbage_stream(provider, then_valid))
    response = ask(gw, provider, stream=True)
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "spare"
    assert GARBAGE not in response.content
    first, last = response.headers["x-gateway-attempts"].split(",")
    assert first.startswith(f"{provider}/test/faults=") and last == "spare/test/faults=ok"
    assert len(upstreams["spare"].requests) == 1


@pytest.mark.parametrize("provider", ["anth", "oai"])
def test_a_garbage_stream_is_classified_as_an_unreadable_answer_on_both_protocols(gw, upstreams, provider):
    upstreams[provider].enqueue(garbage_stream(provider, False))
    response = ask(gw, provider, fallbacks=False, stream=True)
    assert response.status_code == 502 and response.json()["error"]["type"] == "api_error"
    assert response.headers["x-gateway-attempts"] == f"{provider}/test/faults=bad_response"


@pytest.mark.parametrize("provider", ["anth", "oai"])
def test_a_stream_that_ends_before_any_byte_is_an_empty_stream(gw, upstreams, provider):
    upstreams[provider].enqueue(Reply(content_type=STREAM_CONTENT_TYPE, chunks=[]))
    response = ask(gw, provider, fallbacks=False, stream=True)
    assert response.status_code == 502
    assert response.headers["x-gateway-attempts"] == f"{provider}/test/faults=empty_stream"


def stalled_json(provider: str) -> Reply:
    body = message_body() if provider != "oai" else {"id": "chatcmpl-1", "object": "chat.completion"}
    raw = httpx.Response(200, json=body).content
    return Reply(chunks=[raw[:10], raw[10:]], delay_between=IDLE_S * 5)


@pytest.mark.parametrize("provider", ["anth", "oai"])
def test_a_json_answer_that_stalls_after_its_head_is_a_timeout(gw, upstreams, provider):
    upstreams[provider].enqueue(stalled_json(provider))
    response = ask(gw, provider, fallbacks=False)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert provider in response.json()["error"]["message"]
    assert response.headers["x-gateway-attempts"] == f"{provider}/test/faults=timeout"


@pytest.mark.parametrize("provider", ["anth", "oai"])
def test_a_stream_that_stalls_before_its_first_event_is_a_timeout(gw, upstreams, provider):
    upstreams[provider].enqueue(Reply(content_type=STREAM_CONTENT_TYPE, chunks=[b": hello\n", b"data: {}\n\n"],
                                      delay_between=IDLE_S * 5))
    response = ask(gw, provider, fallbacks=False, stream=True)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"


@pytest.mark.parametrize("provider", ["anth", "oai"])
def test_a_stream_that_stalls_midway_ends_with_a_timeout_error_event(gw, upstreams, provider):
    if provider == "oai":
        from tests.fakes.openai import StreamScript, chat_stream
        reply = chat_stream(StreamScript(text=["a", "b"]))
    else:
        reply = sse_reply(stream_events(["a", "b"]))
    reply.chunks = reply.chunks[:3] + [b""] + reply.chunks[3:]
    reply.delay_between = IDLE_S * 2.5
    upstreams[provider].enqueue(reply)
    response = ask(gw, provider, fallbacks=False, stream=True)
    assert response.status_code == 200
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error") and b'"timeout_error"' in last
