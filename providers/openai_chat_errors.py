"""OpenAI-style error responses → Anthropic error kinds, and the two kinds that allow model fallback.

Reads the error shapes OpenAI-compatible servers answer with: `{"error": {"message", "type",
"code"}}` (OpenAI and most), `{"error": "text"}`, `{"object": "error", "message", ...}` (vLLM),
`{"detail": ...}` (FastAPI servers), a one-element list of those (Gemini's compatibility layer), or
plain text. Every message leaving here has anything resembling a credential redacted
(`providers.redaction`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.redaction import redact_secrets

_MAX_MESSAGE = 1000
_TYPE_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error",
    504: "timeout_error", 529: "overloaded_error"}
# `type` or `code` values servers put in error objects, for errors that arrive without a status (in a stream).
_TYPE_BY_NAME = {
    "invalid_request_error": "invalid_request_error", "context_length_exceeded": "invalid_request_error",
    "authentication_error": "authentication_error", "invalid_api_key": "authentication_error",
    "permission_error": "permission_error", "permission_denied": "permission_error",
    "not_found_error": "not_found_error", "model_not_found": "not_found_error",
    "rate_limit_error": "rate_limit_error", "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error", "tokens": "rate_limit_error", "requests": "rate_limit_error",
    "overloaded_error": "overloaded_error", "overloaded": "overloaded_error",
    "server_overloaded": "overloaded_error", "engine_overloaded": "overloaded_error",
    "timeout": "timeout_error", "timeout_error": "timeout_error"}

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length", "context_window_exceeded"}
_CONTEXT_PHRASES = (
    "context length", "context_length", "context window", "maximum context", "too many tokens",
    "prompt is too long", "input is too long", "exceeded model token limit", "exceeds the model's token limit",
    "reduce the length of the messages", "range of input length", "prompt exceeds max length",
    "input tokens exceed", "exceeds the context")
_MODERATION_CODES = {"content_filter", "content_policy_violation", "invalid_prompt", "data_inspection_failed",
                     "moderation_blocked", "content_filter_error", "sensitive_words_detected"}
_MODERATION_PHRASES = (
    "content filter", "content_filter", "content policy", "content management policy", "flagged",
    "moderation", "usage policies", "usage policy", "high risk", "inappropriate content", "content exists risk",
    "data inspection", "safety system")


def _error_object(body: bytes) -> tuple[dict[str, Any], str]:
    """(the error object, or {}, and the body as text) of an upstream error response."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}, text
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, Mapping):
        return {}, text
    error = parsed.get("error")
    if isinstance(error, Mapping):
        return dict(error), text
    if isinstance(error, str):
        return {"message": error}, text
    if "message" in parsed or "detail" in parsed:
        return {"message": parsed.get("message") or parsed.get("detail"), "type": parsed.get("type"),
                "code": parsed.get("code")}, text
    return {}, text


def _names(error: Mapping[str, Any]) -> set[str]:
    return {str(error[k]).lower() for k in ("type", "code", "status") if isinstance(error.get(k), str)}


def _message(error: Mapping[str, Any], text: str, status: int) -> str:
    message = error.get("message")
    if isinstance(message, (dict, list)):
        message = orjson.dumps(message).decode()
    if not isinstance(message, str) or not message.strip():
        looks_like_page = text.lstrip().startswith("<")
        message = text if text and not looks_like_page else f"the upstream answered HTTP {status}"
    return redact_secrets(message.strip())[:_MAX_MESSAGE]


def error_type_of_object(error: Mapping[str, Any]) -> str:
    """Anthropic's error type for an error object that came without an HTTP status (mid-stream)."""
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        return map_error(code, orjson.dumps({"error": dict(error)}))[1]
    for name in _names(error):
        if name in _TYPE_BY_NAME:
            return _TYPE_BY_NAME[name]
    message = str(error.get("message", "")).lower()
    return "overloaded_error" if "overloaded" in message else "api_error"


def map_error(status: int, body: bytes) -> tuple[int, str, str]:
    """(status for the client, Anthropic error type, redacted message) for an upstream error response.

    Statuses follow the gateway's rules: an overloaded upstream (529, or 503 saying so) is 529
    overloaded_error, a gateway timeout 504 timeout_error, any other 5xx 502 api_error; 4xx keep
    their status with the matching Anthropic type (unknown ones are invalid_request_error).
    """
    error, text = _error_object(body)
    message = _message(error, text, status)
    overloaded = "overloaded" in message.lower() or any("overloaded" in n for n in _names(error))
    if status == 529 or (status == 503 and overloaded):
        return 529, "overloaded_error", message
    if status in (504, 524):
        return 504, "timeout_error", message
    if status >= 500:
        return 502, "api_error", message
    if status == 408:
        return 504, "timeout_error", message
    return status, _TYPE_BY_STATUS.get(status, "invalid_request_error"), message


def error_in_response(response: Mapping[str, Any]) -> tuple[int, str, str] | None:
    """The mapped error of a 200 response that carries an error object instead of choices (some
    routers answer so when the provider failed), else None."""
    error = response.get("error")
    if not error or response.get("choices"):
        return None
    error = error if isinstance(error, Mapping) else {"message": str(error)}
    code = error.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 else 502
    return map_error(status, orjson.dumps({"error": dict(error)}))


def _matches(status: int, body: bytes, statuses: tuple[int, ...], codes: set[str], phrases: tuple[str, ...]) -> bool:
    if status not in statuses:
        return False
    error, text = _error_object(body)
    if _names(error) & codes:
        return True
    message = str(error.get("message") or text).lower()
    return any(phrase in message for phrase in phrases)


def is_context_length_error(status: int, body: bytes) -> bool:
    """The upstream refused the prompt as longer than the model's context: another model may fit it."""
    return _matches(status, body, (400, 413, 422), _CONTEXT_CODES, _CONTEXT_PHRASES)


def is_moderation_error(status: int, body: bytes) -> bool:
    """The upstream's content moderation refused the request: another model may answer it."""
    return _matches(status, body, (400, 403, 422, 451), _MODERATION_CODES, _MODERATION_PHRASES)
