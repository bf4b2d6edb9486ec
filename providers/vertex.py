"""Google Vertex AI: Claude through `rawPredict` / `streamRawPredict`, and Gemini's URLs. Pure.

Claude on Vertex takes the Anthropic body without `model` (it is in the URL) and with
`anthropic_version: "vertex-2023-10-16"`; the `anthropic-beta` header passes as a header; the
answer and the SSE stream are Anthropic's own, so `providers.anthropic` reads them unchanged.
Gemini on Vertex speaks the Gemini protocol (`providers/gemini*`); only its URLs are here.
"""
from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import msgspec
import orjson

from providers import openai_chat_errors
from providers.anthropic_cloud import cloud_body

VERTEX_VERSION = "vertex-2023-10-16"
GLOBAL = "global"


def default_base_url(region: str) -> str:
    """`https://{region}-aiplatform.googleapis.com`, or the global endpoint's host for `global`."""
    if region == GLOBAL:
        return "https://aiplatform.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


def _model_url(base_url: str | None, project: str, region: str, publisher: str, model: str) -> str:
    base = (base_url or default_base_url(region)).rstrip("/")
    return (f"{base}/v1/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}"
            f"/publishers/{publisher}/models/{quote(model, safe='@')}")


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
