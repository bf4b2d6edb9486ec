"""Anthropic's error envelope, and the one exception hierarchy that maps onto its error types.

Every failure the gateway answers with is a `GatewayError`: its class fixes the HTTP status and the
Anthropic `error.type`, so a handler raises and one place renders.
"""
from __future__ import annotations

import orjson


# Tells Anthropic's SDKs (and others that read it) not to retry: the answer will not change by waiting.
NO_RETRY = {"x-should-retry": "false"}


class GatewayError(Exception):
    status = 500
    error_type = "api_error"
    final = False  # True: no retry can succeed, and the answer says so with `x-should-retry: false`

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = {**NO_RETRY, **(headers or {})} if self.final else headers or {}
        if status is not None:
            self.status = status

    def body(self) -> bytes:
        return error_body(self.error_type, self.message)


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    """A missing, unknown, revoked or expired key: only a different key helps."""
    status = 401
    error_type = "authentication_error"
    final = True


class PermissionDenied(GatewayError):
    """A model outside the key's allow-list."""
    status = 403
    error_type = "permission_error"
    final = True


class NotFound(GatewayError):
    status = 404
    error_type = "not_found_error"


class RequestTooLarge(GatewayError):
    status = 413
    error_type = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_error"


class UpstreamFailed(GatewayError):
    """A refused connection, a 5xx, or a provider that rejected our own credentials."""
    status = 502
    error_type = "api_error"


class UpstreamTimeout(GatewayError):
    status = 504
    error_type = "timeout_error"


class Overloaded(GatewayError):
    status = 529
    error_type = "overloaded_error"


class InternalError(GatewayError):
    status = 500
    error_type = "api_error"


class PassThrough(GatewayError):
    """An upstream 4xx that is the final answer: status and body go to the client unchanged."""

    def __init__(self, status: int, raw_body: bytes, error_type: str, message: str) -> None:
        super().__init__(message, status=status)
        self.error_type = error_type
        self.raw_body = raw_body

    def body(self) -> bytes:
        return self.raw_body


ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "api_error", 504: "timeout_error", 529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPE_BY_STATUS:
        return ERROR_TYPE_BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def sse_error_event(error_type: str, message: str) -> bytes:
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"
