"""Google error bodies → Anthropic error types and statuses, and the errors that allow model fallback."""
from __future__ import annotations

import json

import pytest

from providers.gemini import is_context_length_error, is_moderation_error, map_error, retry_delay
from tests.fakes import gemini as fake
from tests.fakes.base import Reply


def mapped(reply: Reply) -> tuple[int, str, str]:
    return map_error(reply.status, b"".join(reply.chunks))


@pytest.mark.parametrize(("reply", "status", "error_type"), [
    (fake.api_key_invalid(), 401, "authentication_error"),
    (fake.key_missing(), 403, "permission_error"),
    (fake.invalid_argument("* GenerateContentRequest.contents: contents is not specified"), 400,
     "invalid_request_error"),
    (fake.model_not_found("gemini-0"), 404, "not_found_error"),
    (fake.resource_exhausted(), 429, "rate_limit_error"),
    (fake.overloaded(), 529, "overloaded_error"),
    (fake.error_reply(503, "UNAVAILABLE", "The service is currently unavailable."), 502, "api_error"),
    (fake.internal(), 502, "api_error"),
    (fake.deadline_exceeded(), 504, "timeout_error"),
    (fake.error_reply(400, "FAILED_PRECONDITION", "User location is not supported for the API use."), 403,
     "permission_error"),
])
def test_google_errors_map_to_anthropic_types(reply: Reply, status: int, error_type: str) -> None:
    client_status, kind, message = mapped(reply)
    assert (client_status, kind) == (status, error_type)
    assert message == json.loads(b"".join(reply.chunks))["error"]["message"]


def test_messages_never_carry_a_google_key() -> None:
    reply = fake.invalid_argument("API key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW is not valid")
    assert mapped(reply)[2] == "API key [redacted] is not valid"


def test_a_body_that_is_not_google_json_still_maps_by_status() -> None:
    assert map_error(502, b"<html><body>Bad Gateway</body></html>") == (502, "api_error",
                                                                      "the upstream answered HTTP 502")
    assert map_error(400, b"[{\"error\": {\"code\": 400, \"message\": \"bad\", \"status\": \"INVALID_ARGUMENT\"}}]") \
        == (400, "invalid_request_error", "bad")


def test_rate_limit_retry_delay_is_read_from_retry_info() -> None:
    assert retry_delay(b"".join(fake.resource_exhausted(retry_seconds=37).chunks)) == 37.0
    assert retry_delay(b"".join(fake.internal().chunks)) is None


def test_a_prompt_over_the_context_window_allows_another_model() -> None:
    reply = fake.context_too_long()
    assert is_context_length_error(reply.status, b"".join(reply.chunks))
    assert not is_context_length_error(400, b"".join(fake.invalid_argument("Unknown name \"x\"").chunks))
    assert not is_moderation_error(reply.status, b"".join(reply.chunks))


def test_a_safety_refusal_allows_another_model() -> None:
    body = fake.error_body(400, "INVALID_ARGUMENT", "The request was blocked due to prohibited content.")
    assert is_moderation_error(400, body)
    assert not is_moderation_error(500, body)
