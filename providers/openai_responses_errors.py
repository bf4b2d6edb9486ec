"""Responses API failures → Anthropic error kinds.

An HTTP error from `/responses` has OpenAI's usual `{"error": {"message", "type", "param", "code"}}`
body, so `map_error`, `is_context_length_error` and `is_moderation_error` are chat completions' own
(one reading of OpenAI error bodies for both protocols). What is the Responses API's alone is read
here: a Response that failed (`status: "failed"` with an `error` object, in a 200 JSON answer or a
`response.failed` event) and the stream's `error` event, both of which carry a `code` from the API's
ResponseError list instead of an HTTP status. Every message leaving here is redacted.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.openai_chat_errors import (
    error_type_of_object,
    is_context_length_error,
    is_moderation_error,
    map_error,
    redact_secrets,
)

__all__ = ["error_in_response", "error_of_object", "is_context_length_error", "is_moderation_error", "map_error"]

_MAX_MESSAGE = 1000
# (client status, Anthropic type) per ResponseError code; image_* codes are the client's input.
_BY_CODE = {
    "server_error": (502, "api_error"),
    "rate_limit_exceeded": (429, "rate_limit_error"),
    "vector_store_timeout": (504, "timeout_error"),
    "invalid_prompt": (400, "invalid_request_error"),
    "bio_policy": (400, "invalid_request_error"),
    "misalignment_policy_violation": (400, "invalid_request_error"),
    "data_residency_mismatch": (400, "invalid_request_error"),
    "context_length_exceeded": (400, "invalid_request_error"),
}
_STATUS_BY_TYPE = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                   "not_found_error": 404, "rate_limit_error": 429, "timeout_error": 504,
                   "overloaded_error": 529, "api_error": 502}


def error_of_object(error: Mapping[str, Any]) -> tuple[int, str, str]:
    """(status for the client, Anthropic error type, redacted message) of an error object that came
    without an HTTP status: a failed Response's `error`, or a stream `error` event."""
    code = error.get("code")
    if isinstance(code, str) and code in _BY_CODE:
        status, kind = _BY_CODE[code]
    elif isinstance(code, str) and ("image" in code or code.startswith("invalid_")):
        status, kind = 400, "invalid_request_error"
    else:
        kind = error_type_of_object(error)
        status = _STATUS_BY_TYPE.get(kind, 502)
    message = error.get("message")
    text = message.strip() if isinstance(message, str) and message.strip() else "the upstream reported an error"
    return status, kind, redact_secrets(text)[:_MAX_MESSAGE]


def error_in_response(response: Mapping[str, Any]) -> tuple[int, str, str] | None:
    """The mapped error of a 200 Response that did not finish (failed, cancelled, or still queued or
    in progress, which a synchronous answer should never be), else None."""
    status = response.get("status")
    if status in (None, "completed", "incomplete"):
        return None
    error = response.get("error")
    if isinstance(error, Mapping):
        return error_of_object(error)
    return 502, "api_error", f"the upstream answered a response with status {str(status)[:40]!r}"
