"""OpenAI-style error responses → Anthropic error kinds; which ones allow falling back to another model."""
from __future__ import annotations

import json

import pytest

from providers.openai_chat import (
    error_in_response,
    is_context_length_error,
    is_moderation_error,
    map_error,
    redact_secrets,
)
from tests.fakes.openai import (
    content_filtered,
    context_length_exceeded,
    error_body,
    invalid_api_key,
    overloaded,
    rate_limited,
    server_error,
)


def body_of(reply) -> bytes:
    return b"".join(reply.chunks)


@pytest.mark.parametrize(("status", "expected_status", "expected_type"), [
    (400, 400, "invalid_request_error"), (401, 401, "authentication_error"), (402, 402, "billing_error"),
    (403, 403, "permission_error"), (404, 404, "not_found_error"), (408, 504, "timeout_error"),
    (413, 413, "request_too_large"), (418, 418, "invalid_request_error"), (422, 400 + 22, "invalid_request_error"),
    (429, 429, "rate_limit_error"), (500, 502, "api_error"), (502, 502, "api_error"), (503, 502, "api_error"),
    (504, 504, "timeout_error"), (529, 529, "overloaded_error")])
def test_status_maps_to_an_anthropic_error_type(status: int, expected_status: int, expected_type: str) -> None:
    mapped = map_error(status, error_body("something went wrong", type="whatever"))
    assert mapped == (expected_status, expected_type, "something went wrong")


def test_503_that_says_overloaded_is_overloaded_error() -> None:
    assert map_error(503, body_of(overloaded()))[:2] == (529, "overloaded_error")


def test_openai_rate_limit_reply_keeps_its_message() -> None:
    status, kind, message = map_error(429, body_of(rate_limited()))
    assert (status, kind) == (429, "rate_limit_error") and message.startswith("Rate limit reached for gpt-4o-mini")


def test_server_error_is_a_502_api_error() -> None:
    assert map_error(500, body_of(server_error()))[:2] == (502, "api_error")


def test_an_api_key_in_the_upstream_message_is_redacted() -> None:
    status, kind, message = map_error(401, body_of(invalid_api_key("sk-proj-Zx81_aaaaBBBBccccDDDD1234")))
    assert (status, kind) == (401, "authentication_error")
    assert "Zx81" not in message and "sk-proj" not in message and "Incorrect API key provided: [redacted]." in message


@pytest.mark.parametrize("secret", [
    "sk-ant-api03-abcdefghijklmnop", "AIzaSyA1234567890abcdefghijklmnopqrstu", "Bearer abcdef1234567890",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlc2lnbmF0dXJl", "api_key=live_1234567890abcdef"])
def test_credentials_of_any_common_shape_are_redacted(secret: str) -> None:
    message = map_error(400, error_body(f"rejected {secret} here", type="invalid_request_error"))[2]
    assert secret.split()[-1].split("=")[-1] not in message and "[redacted]" in message
    assert message.startswith("rejected ") and message.endswith(" here")


def test_ordinary_words_are_not_mistaken_for_keys() -> None:
    text = "task-oriented risk-free work-around with max_tokens=4096"
    assert redact_secrets(text) == text


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error": "model overloaded, retry"}', "model overloaded, retry"),
    (b'{"object": "error", "message": "max_tokens must be at least 1", "type": "BadRequestError", "code": 400}',
     "max_tokens must be at least 1"),
    (b'{"detail": "Not authenticated"}', "Not authenticated"),
    (b'[{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}]', "API key not valid"),
    (b"upstream connect error or disconnect/reset before headers",
     "upstream connect error or disconnect/reset before headers"),
    (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "the upstream answered HTTP 400"),
    (b"", "the upstream answered HTTP 400"),
])
def test_every_common_error_shape_yields_its_message(body: bytes, message: str) -> None:
    assert map_error(400, body)[2] == message


def test_long_messages_are_cut() -> None:
    assert len(map_error(400, error_body("x" * 5000, type="invalid_request_error"))[2]) == 1000


@pytest.mark.parametrize("body", [
    body_of(context_length_exceeded()),
    error_body("This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
               type="BadRequestError"),
    error_body("Invalid request: Your request exceeded model token limit: 8192", type="invalid_request_error"),
    error_body("Range of input length should be [1, 30720]", type="InvalidParameter"),
    error_body("input too big", type="invalid_request_error", code="context_length_exceeded"),
])
def test_context_length_errors_are_recognised(body: bytes) -> None:
    assert is_context_length_error(400, body)


@pytest.mark.parametrize(("status", "body"), [
    (400, error_body("Invalid value for 'temperature'", type="invalid_request_error")),
    (429, error_body("Request too large for gpt-4o: too many tokens per min", type="tokens")),
    (500, body_of(context_length_exceeded())),
])
def test_other_errors_are_not_context_length(status: int, body: bytes) -> None:
    assert not is_context_length_error(status, body)


@pytest.mark.parametrize("body", [
    body_of(content_filtered()),
    error_body("The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
               type="invalid_request_error", code="content_filter"),
    error_body("The request was rejected because it was considered high risk", type="content_filter"),
    error_body("Content Exists Risk", type="invalid_request_error"),
    json.dumps({"error": {"message": "Input data may contain inappropriate content.",
                          "code": "data_inspection_failed"}}).encode(),
])
def test_moderation_refusals_are_recognised(body: bytes) -> None:
    assert is_moderation_error(400, body)


@pytest.mark.parametrize(("status", "body"), [
    (400, body_of(context_length_exceeded())),
    (500, body_of(content_filtered())),
    (401, body_of(invalid_api_key())),
])
def test_other_errors_are_not_moderation(status: int, body: bytes) -> None:
    assert not is_moderation_error(status, body)


def test_a_200_body_carrying_an_error_object_is_mapped() -> None:
    assert error_in_response({"error": {"code": 502, "message": "Provider returned error"}}) == (
        502, "api_error", "Provider returned error")
    assert error_in_response({"id": "chatcmpl-1", "choices": [{"index": 0}]}) is None
