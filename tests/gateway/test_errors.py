"""Every error is Anthropic's envelope with the right status; no client mistake yields a 500."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEAM_KEY, base_settings
from tests.fakes.anthropic import error_reply, json_reply
from tests.fakes.base import Reply, free_port
from tests.gateway_server import GatewayThread

HI = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert response.headers["request-id"].startswith("req_")
    assert b"sk-upstream-secret" not in response.content
    return body["error"]


def test_missing_key_is_authentication_error(gateway):
    assert_error(httpx.post(gateway.url + "/v1/messages", json=HI), 401, "authentication_error")


def test_wrong_key_is_authentication_error(gateway):
    assert_error(httpx.post(gateway.url + "/v1/messages", json=HI, headers={"x-api-key": "sk-nope-nope"}),
                 401, "authentication_error")


def test_a_valid_bearer_key_beside_a_different_x_api_key_is_refused(gateway, upstream):
    response = httpx.post(gateway.url + "/v1/messages", json=HI,
                          headers={"x-api-key": "sk-placeholder", "authorization": f"Bearer {TEAM_KEY}"})
    assert "different keys" in assert_error(response, 401, "authentication_error")["message"]
    assert upstream.requests == []


def test_malformed_json_is_invalid_request(client):
    assert_error(client.post("/v1/messages", content=b'{"model": ', headers={"content-type": "application/json"}),
                 400, "invalid_request_error")


def test_non_object_body_is_invalid_request(client):
    assert_error(client.post("/v1/messages", json=[1, 2]), 400, "invalid_request_error")


@pytest.mark.parametrize("field", ["model", "messages", "max_tokens"])
def test_missing_required_field_is_named(client, field):
    body = {k: v for k, v in HI.items() if k != field}
    error = assert_error(client.post("/v1/messages", json=body), 400, "invalid_request_error")
    assert field in error["message"]


@pytest.mark.parametrize("field,value", [("model", 42), ("messages", "hi"), ("max_tokens", "5"),
                                         ("max_tokens", 0), ("max_tokens", True), ("stream", "yes"),
                                         ("models", "claude-opus-4-8"), ("trace", "x"), ("provider", [])])
def test_mistyped_field_is_named(client, field, value):
    error = assert_error(client.post("/v1/messages", json={**HI, field: value}), 400, "invalid_request_error")
    assert field in error["message"]


@pytest.mark.parametrize("field", ["session_id", "user"])
def test_ids_over_128_characters_are_refused(client, field):
    error = assert_error(client.post("/v1/messages", json={**HI, field: "x" * 129}), 400, "invalid_request_error")
    assert field in error["message"]


def test_session_header_over_128_characters_is_refused(client):
    error = assert_error(client.post("/v1/messages", json=HI, headers={"x-session-id": "s" * 129}),
                         400, "invalid_request_error")
    assert "session_id" in error["message"]


def test_128_character_ids_are_accepted(client, upstream):
    assert client.post("/v1/messages", json={**HI, "user": "u" * 128, "session_id": "s" * 128}).status_code == 200


def test_unknown_model_is_not_found_with_suggestions(client):
    error = assert_error(client.post("/v1/messages", json={**HI, "model": "claude-opus-4-88"}), 404, "not_found_error")
    assert "claude-opus-4.8" in error["message"]


def test_unknown_fallback_model_is_not_found(client):
    assert_error(client.post("/v1/messages", json={**HI, "models": ["no-such-model"]}), 404, "not_found_error")


def test_unknown_route_is_not_found_in_anthropic_envelope(client):
    assert_error(client.get("/v1/nothing-here"), 404, "not_found_error")


def test_upstream_429_becomes_rate_limit_error_with_retry_after(client, upstream):
    upstream.enqueue(error_reply(429, "rate_limit_error", "slow down", {"retry-after": "17"}))
    response = client.post("/v1/messages", json=HI)
    error = assert_error(response, 429, "rate_limit_error")
    assert response.headers["retry-after"] == "17"
    assert "anthropic" in error["message"]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_upstream_5xx_becomes_api_error_naming_the_provider(client, upstream, status):
    upstream.enqueue(error_reply(status, "api_error", "boom"))
    error = assert_error(client.post("/v1/messages", json=HI), 502, "api_error")
    assert "anthropic" in error["message"]


def test_upstream_529_becomes_overloaded_error(client, upstream):
    upstream.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
    error = assert_error(client.post("/v1/messages", json=HI), 529, "overloaded_error")
    assert "anthropic" in error["message"]


def test_upstream_400_passes_through_with_its_body(client, upstream):
    upstream.enqueue(error_reply(400, "invalid_request_error", "messages.0.content: bad block"))
    response = client.post("/v1/messages", json=HI)
    error = assert_error(response, 400, "invalid_request_error")
    assert error["message"] == "messages.0.content: bad block"


def test_upstream_rejecting_our_credentials_is_api_error_without_the_key(client, upstream):
    upstream.enqueue(error_reply(401, "authentication_error", "invalid x-api-key sk-upstream-secret-anthropic"))
    error = assert_error(client.post("/v1/messages", json=HI), 502, "api_error")
    assert "anthropic" in error["message"]


def test_upstream_slow_first_byte_is_timeout_error(anthropic_upstream):
    anthropic_upstream.reset()
    settings = base_settings(anthropic_upstream.url, timeouts={"first_byte": 0.3})
    with GatewayThread(**settings) as gw:
        anthropic_upstream.enqueue(Reply(delay_first=2.0, chunks=[b"{}"]))
        response = httpx.post(gw.url + "/v1/messages", json=HI, headers={"x-api-key": TEAM_KEY})
    error = assert_error(response, 504, "timeout_error")
    assert "anthropic" in error["message"]


def test_refused_connection_is_api_error_naming_the_provider():
    settings = base_settings(f"http://127.0.0.1:{free_port()}")
    with GatewayThread(**settings) as gw:
        response = httpx.post(gw.url + "/v1/messages", json=HI, headers={"x-api-key": TEAM_KEY})
    error = assert_error(response, 502, "api_error")
    assert "anthropic" in error["message"]


def test_body_over_the_limit_is_request_too_large(anthropic_upstream):
    settings = base_settings(anthropic_upstream.url, max_body_bytes=4096)
    with GatewayThread(**settings) as gw:
        big = {**HI, "messages": [{"role": "user", "content": "x" * 5000}]}
        response = httpx.post(gw.url + "/v1/messages", json=big, headers={"x-api-key": TEAM_KEY})
        assert_error(response, 413, "request_too_large")
        chunked = httpx.post(gw.url + "/v1/messages", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]),
                             headers={"x-api-key": TEAM_KEY})
        assert_error(chunked, 413, "request_too_large")


def test_upstream_answering_garbage_is_api_error(client, upstream):
    upstream.enqueue(Reply(chunks=[b"<html>oops</html>"]))
    assert_error(client.post("/v1/messages", json=HI), 502, "api_error")


def test_successful_answer_carries_a_request_id(client, upstream):
    upstream.enqueue(json_reply({"id": "msg_1", "type": "message", "role": "assistant", "model": "x", "content": [],
                                 "stop_reason": "end_turn", "stop_sequence": None,
                                 "usage": {"input_tokens": 1, "output_tokens": 1}}))
    response = client.post("/v1/messages", json=HI)
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
