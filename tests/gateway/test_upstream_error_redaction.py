"""Upstreams that quote the gateway's provider key back in an error: the client never sees the key,
on either protocol, in JSON errors, passed-through 4xx bodies or stream `error` events."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import TEAM_KEY
from tests.fakes.anthropic import AnthropicFake, error_reply, event, sse_reply, stream_events
from tests.fakes.openai import OpenAIFake, StreamScript, chat_stream
from tests.fakes.openai import error_reply as openai_error_reply
from tests.fakes.base import Reply
from tests.gateway_server import GatewayThread

# Keys of no well-known shape: only redaction of the configured key itself can catch them.
ANTHROPIC_KEY = "plain-anthropic-credential-1234567890"
OPENAI_KEY = "plain-openai-credential-0987654321"
# A key of a well-known shape, which the patterns catch wherever it comes from.
SHAPED_KEY = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def upstreams():
    with AnthropicFake() as anthropic_fake, OpenAIFake() as openai_fake:
        yield anthropic_fake, openai_fake


@pytest.fixture(scope="module")
def gw(upstreams):
    anthropic_fake, openai_fake = upstreams
    models = [{"id": f"test/{name}", "display_name": name, "context_length": 100000, "max_output": 4096,
               "endpoints": [{"provider": name, "upstream_model": f"{name}-model",
                              "pricing": {"input": 1.0, "output": 5.0}}]} for name in ("anth", "oai")]
    settings = {"providers": {"anth": {"protocol": "anthropic", "base_url": anthropic_fake.url,
                                       "api_key": ANTHROPIC_KEY},
                              "oai": {"protocol": "openai", "base_url": openai_fake.url + "/v1",
                                      "api_key": OPENAI_KEY}},
                "models": models, "keys": [{"key": TEAM_KEY, "team": "team-a"}],
                "retries": {"per_endpoint": 1}}
    with GatewayThread(**settings) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(upstreams):
    for fake in upstreams:
        fake.reset()


def ask(gw, model: str, **body) -> httpx.Response:
    payload = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=payload, timeout=20)


def assert_no_secret(response: httpx.Response) -> None:
    seen = response.text + json.dumps(dict(response.headers))
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, SHAPED_KEY):
        assert secret not in seen
    assert "[redacted]" in response.text


@pytest.mark.parametrize("status", [400, 404, 422])
def test_an_anthropic_4xx_body_passed_through_has_the_provider_key_redacted(gw, upstreams, status):
    upstreams[0].enqueue(error_reply(status, "invalid_request_error", f"bad request for key {ANTHROPIC_KEY}"))
    response = ask(gw, "test/anth")
    assert response.status_code == status
    assert response.json()["error"]["message"] == "bad request for key [redacted]"
    assert_no_secret(response)


@pytest.mark.parametrize("status", [500, 529, 429])
def test_an_anthropic_error_the_gateway_maps_has_the_provider_key_redacted(gw, upstreams, status):
    upstreams[0].enqueue(error_reply(status, "api_error", f"upstream broke using {ANTHROPIC_KEY} and {SHAPED_KEY}"))
    response = ask(gw, "test/anth")
    assert response.status_code == {500: 502}.get(status, status)
    assert_no_secret(response)


def test_an_anthropic_error_event_before_the_first_byte_has_the_provider_key_redacted(gw, upstreams):
    upstreams[0].enqueue(sse_reply([event("error", {"type": "error", "error": {
        "type": "invalid_request_error", "message": f"key {ANTHROPIC_KEY} is not allowed"}})]))
    response = ask(gw, "test/anth", stream=True)
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "provider anth: key [redacted] is not allowed"
    assert_no_secret(response)


def test_an_anthropic_error_event_mid_stream_has_the_provider_key_redacted(gw, upstreams):
    events = stream_events(["Hello", " there"])[:4]
    events.append(event("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": f"overloaded, key {ANTHROPIC_KEY} throttled"}}))
    upstreams[0].enqueue(sse_reply(events, delay_between=0.05))  # the error comes after the first byte
    response = ask(gw, "test/anth", stream=True)
    assert response.status_code == 200
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error")
    assert b"overloaded, key [redacted] throttled" in last
    assert_no_secret(response)


def test_an_openai_error_has_the_provider_key_redacted(gw, upstreams):
    upstreams[1].enqueue(openai_error_reply(400, f"key {OPENAI_KEY} may not use this model"))
    response = ask(gw, "test/oai")
    assert response.status_code == 400
    assert_no_secret(response)


def test_an_openai_error_chunk_mid_stream_has_the_provider_key_redacted(gw, upstreams):
    upstreams[1].enqueue(chat_stream(StreamScript(text=["Hello"], error={
        "message": f"quota of {OPENAI_KEY} exhausted", "type": "server_error"}), delay_between=0.05))
    response = ask(gw, "test/oai", stream=True)
    assert response.status_code == 200
    assert response.content.strip().split(b"\n\n")[-1].startswith(b"event: error")
    assert_no_secret(response)


def test_a_plain_text_error_page_has_the_provider_key_redacted(gw, upstreams):
    upstreams[0].enqueue(Reply(status=403, content_type="text/plain",
                               chunks=[f"forbidden: {ANTHROPIC_KEY}".encode()]))
    response = ask(gw, "test/anth")
    assert response.status_code == 502
    assert ANTHROPIC_KEY not in response.text


def test_a_count_tokens_error_passed_through_has_the_provider_key_redacted(gw, upstreams):
    upstreams[0].enqueue(error_reply(400, "invalid_request_error", f"tools invalid for key {ANTHROPIC_KEY}"))
    response = httpx.post(gw.url + "/v1/messages/count_tokens", headers={"x-api-key": TEAM_KEY}, timeout=20,
                          json={"model": "test/anth", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "tools invalid for key [redacted]"
    assert_no_secret(response)
