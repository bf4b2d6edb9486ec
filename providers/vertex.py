"""Google Vertex AI: Claude through `rawPredict` / `streamRawPredict`, and Gemini's URLs. Pure.

Claude on Vertex takes the Anthropic body without `model` (it is in the URL) and with
`anthropic_version: "vertex-2023-10-16"`; the `anthropic-beta` header passes as a header; the
answer and the SSE stream are Anthropic's own, so `providers.anthropic` reads them unchanged.
Gemini on Vertex speaks the Gemini protocol (`providers/gemini*`) under the same host's
`publishers/google` path: an endpoint with `options: {protocol: gemini}` is served by that
protocol's module with this path as its base URL.

`PROTOCOL` is the `vertex` protocol. Where it goes is provider data: `project` and `region` (the
`auth: google` fields; the executor adds the access token).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import orjson

from providers import anthropic, openai_chat_errors, protocol
from providers.anthropic_cloud import cloud_body
from providers.redaction import redact_bytes

VERTEX_VERSION = "vertex-2023-10-16"
GLOBAL = "global"


def default_base_url(region: str) -> str:
    """`https://{region}-aiplatform.googleapis.com`, or the global endpoint's host for `global`."""
    if region == GLOBAL:
        return "https://aiplatform.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


def publisher_url(base_url: str | None, project: str, region: str, publisher: str) -> str:
    """`{base}/v1/projects/{project}/locations/{region}/publishers/{publisher}`. The global host
    names no region: a regional location is reached at its own host."""
    base = (base_url or default_base_url(region)).rstrip("/")
    if region != GLOBAL and base == default_base_url(GLOBAL):
        base = default_base_url(region)
    return f"{base}/v1/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}/publishers/{publisher}"


def _model_url(base_url: str | None, project: str, region: str, publisher: str, model: str) -> str:
    return f"{publisher_url(base_url, project, region, publisher)}/models/{quote(model, safe='@')}"


def claude_url(project: str, region: str, model: str, *, stream: bool, base_url: str | None = None) -> str:
    """`...:rawPredict`, or `...:streamRawPredict` for a stream; `model` like `claude-sonnet-4-5@20250929`."""
    return _model_url(base_url, project, region, "anthropic", model) + (
        ":streamRawPredict" if stream else ":rawPredict")


def gemini_url(project: str, region: str, model: str, *, stream: bool, base_url: str | None = None) -> str:
    """`...:generateContent`, or `...:streamGenerateContent?alt=sse` (SSE rather than a JSON array)."""
    return _model_url(base_url, project, region, "google", model) + (
        ":streamGenerateContent?alt=sse" if stream else ":generateContent")


def claude_body(raw: bytes, *, values: Mapping[str, msgspec.Raw] | None = None) -> bytes:
    """The client's body for rawPredict: no `model`, `anthropic_version` added, `stream` kept (the
    stream endpoint wants `"stream": true` in the body too)."""
    return cloud_body(raw, version=VERTEX_VERSION, drop=("model",), values=values)


def claude_headers(*, beta: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if beta:
        headers["anthropic-beta"] = beta
    return headers


def map_error(status: int, body: bytes) -> tuple[int, str, str]:
    """(status for the client, Anthropic error type, redacted message) of a Vertex AI error answer.

    Errors of the model come in Anthropic's envelope (its `error.type` is kept); errors of Google's
    front end (quota, authentication, a wrong URL) in Google's, `{"error": {"code", "message",
    "status"}}`, read like any other `{"error": {...}}` body."""
    client_status, error_type, message = openai_chat_errors.map_error(status, body)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return client_status, error_type, message
    if isinstance(parsed, dict) and parsed.get("type") == "error" and isinstance(parsed.get("error"), dict):
        anthropic_type = parsed["error"].get("type")
        if isinstance(anthropic_type, str) and anthropic_type and client_status < 500:
            error_type = anthropic_type
    return client_status, error_type, message


# -- the protocol ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VertexOptions:
    project: str
    region: str
    gemini: bool = False     # the endpoint speaks the Gemini protocol (`options.protocol: gemini`)
    inner: Any = None        # the Gemini protocol's own options for it


class RawPredict:
    """The `vertex` protocol: Claude's `rawPredict` / `streamRawPredict`, and Gemini's endpoints
    handed to the Gemini protocol on Vertex's URLs."""

    local = False
    answers = protocol.MESSAGES

    def options(self, attempt, require_parameters: bool) -> VertexOptions:
        settings = attempt.provider.auth_settings
        # The gateway fills `project` in from the credentials when the config leaves it out.
        project, region = settings.get("project", ""), settings.get("region") or GLOBAL
        if attempt.endpoint.options.protocol != "gemini":
            return VertexOptions(project, region)
        gemini = _gemini()
        return VertexOptions(project, region, True,
                             gemini.options(attempt, require_parameters) if gemini is not None else None)

    def _gemini_call(self, call: protocol.Call) -> tuple[Any, protocol.Call]:
        gemini = _gemini()
        if gemini is None:
            raise protocol.Refused(protocol.Failure(
                "unsupported", 502, "api_error", f"provider {call.provider}: the gemini protocol is not available"))
        options = call.options
        base = publisher_url(call.base_url, options.project, options.region, "google")
        return gemini, dataclasses.replace(call, base_url=base, options=options.inner)

    def request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        if call.options.gemini:
            gemini, inner = self._gemini_call(call)
            return gemini.request(inner)
        try:
            body = claude_body(call.request.raw, values=call.request.values)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise protocol.Refused(protocol.Failure("400", 400, "invalid_request_error",
                                                    "request body must be a JSON object")) from None
        headers = claude_headers(beta=call.beta)
        if call.extra_headers:
            headers.update(call.extra_headers)
        options = call.options
        return protocol.UpstreamRequest(claude_url(options.project, options.region, call.upstream_model,
                                                   stream=call.request.stream, base_url=call.base_url),
                                        headers, body)

    def failure(self, call: protocol.Call, status: int, headers, body: bytes) -> protocol.Failure:
        if call.options.gemini:
            gemini, inner = self._gemini_call(call)
            return gemini.failure(inner, status, headers, body)
        body = redact_bytes(body, call.secrets)
        client_status, error_type, message = map_error(status, body)
        return protocol.classify(call.provider, status, client_status=client_status, error_type=error_type,
                                 message=message, headers=headers,
                                 context_length=anthropic.is_context_length_error(status, message),
                                 moderation=anthropic.is_moderation_error(status, message))

    def message(self, call: protocol.Call, raw: bytes) -> protocol.Answer:
        if call.options.gemini:
            gemini, inner = self._gemini_call(call)
            return gemini.message(inner, raw)
        return anthropic.PROTOCOL.message(call, raw)

    def stream(self, call: protocol.Call) -> protocol.StreamTranslator:
        if call.options.gemini:
            gemini, inner = self._gemini_call(call)
            return gemini.stream(inner)
        return anthropic.PROTOCOL.stream(call)

    def count_request(self, call: protocol.Call) -> protocol.UpstreamRequest | None:
        if call.options.gemini:
            gemini, inner = self._gemini_call(call)
            return gemini.count_request(inner)
        return None  # Claude on Vertex counts at another endpoint the gateway does not call: it estimates

    def counted(self, raw: bytes) -> dict[str, Any] | None:
        gemini = _gemini()
        return gemini.counted(raw) if gemini is not None else None


def _gemini():
    """The Gemini protocol's implementation, when this build registers one."""
    return protocol.protocol_for("gemini") if "gemini" in protocol.NAMES else None


PROTOCOL = RawPredict()
