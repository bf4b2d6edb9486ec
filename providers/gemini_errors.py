"""Google error responses → Anthropic error kinds, and the two kinds that allow model fallback.

Google answers `{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT", "details":
[{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", ...}]}}`
(sometimes as a one-element list). The canonical `status` decides where the HTTP status would
mislead: an invalid API key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, which is our
credential's failure (401), not the client's request; FAILED_PRECONDITION (the API is not offered
in the caller's region, billing is off) is the provider's (403), so another endpoint may serve.
Every message leaving here has anything resembling a credential redacted.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from providers.openai_chat_errors import redact_secrets

_MAX_MESSAGE = 1000
# (client status, Anthropic error type) per canonical status, for 4xx answers.
_BY_STATUS_NAME = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"), "OUT_OF_RANGE": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (403, "permission_error"), "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"), "NOT_FOUND": (404, "not_found_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"), "ABORTED": (409, "invalid_request_error")}
_TYPE_BY_HTTP = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}
_CREDENTIAL_REASONS = {"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED", "ACCESS_TOKEN_EXPIRED",
                       "CREDENTIALS_MISSING"}
_CONTEXT = re.compile(r"input token count.*exceeds the maximum|exceeds the maximum number of tokens|"
                      r"context (?:length|window)|too many tokens", re.IGNORECASE | re.DOTALL)
_MODERATION = re.compile(r"prohibited content|safety (?:settings|filter|reasons)|blocked due to|"
                         r"violat\w+ .*polic", re.IGNORECASE | re.DOTALL)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def error_object(body: bytes) -> tuple[dict[str, Any], str]:
    """(the `error` object, or {}, and the body as text) of a Google error response; some Google front
    ends wrap it in a one-element array."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list):
        parsed = parsed[0] if parsed else None
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    return (dict(error) if isinstance(error, Mapping) else {}), body.decode("utf-8", "replace").strip()


def _reasons(error: Mapping[str, Any]) -> set[str]:
    details = error.get("details")
    return {str(d["reason"]) for d in details or () if isinstance(d, Mapping) and isinstance(d.get("reason"), str)} \
        if isinstance(details, list) else set()


def _message(error: Mapping[str, Any], text: str, status: int) -> str:
    message = error.get("message")
    if not isinstance(message, str) or not message.strip():
        message = text if text and not text.lstrip().startswith("<") else f"the upstream answered HTTP {status}"
    return redact_secrets(message.strip())[:_MAX_MESSAGE]


def map_error(status: int, body: bytes) -> tuple[int, str, str]:
    """(status for the client, Anthropic error type, redacted message) for a Google error response.

    5xx follow the gateway's rules: UNAVAILABLE saying "overloaded" is 529 overloaded_error, a
    DEADLINE_EXCEEDED (504) 504 timeout_error, any other 5xx 502 api_error.
    """
    error, text = error_object(body)
    message = _message(error, text, status)
    name = error.get("status") if isinstance(error.get("status"), str) else ""
    if status >= 500 or name in ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS"):
        if name == "DEADLINE_EXCEEDED" or status == 504:
            return 504, "timeout_error", message
        if status == 529 or (status == 503 and "overloaded" in message.lower()):
            return 529, "overloaded_error", message
        return 502, "api_error", message
    if _reasons(error) & _CREDENTIAL_REASONS:
        return 401, "authentication_error", message
    if name in _BY_STATUS_NAME:
        return _BY_STATUS_NAME[name][0], _BY_STATUS_NAME[name][1], message
    if status == 408 or name == "CANCELLED":
        return 504, "timeout_error", message
    return status, _TYPE_BY_HTTP.get(status, "invalid_request_error"), message


def retry_delay(body: bytes) -> float | None:
    """Seconds a 429's `google.rpc.RetryInfo` asks to wait (Google sends no retry-after header), else None."""
    error, _ = error_object(body)
    for detail in error.get("details") or ():
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _message_of(body: bytes) -> str:
    error, text = error_object(body)
    return str(error.get("message") or text)


def is_context_length_error(status: int, body: bytes) -> bool:
    """Gemini refused the prompt as longer than the model's context: another model may fit it."""
    return status in (400, 413) and bool(_CONTEXT.search(_message_of(body)))


def is_moderation_error(status: int, body: bytes) -> bool:
    """Gemini's safety system refused the request: another model may answer it."""
    return status in (400, 403, 451) and bool(_MODERATION.search(_message_of(body)))
