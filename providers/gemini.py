"""The `gemini` protocol: Google's native Gemini API (`models/{model}:generateContent`,
`:streamGenerateContent?alt=sse`, `:countTokens`), as pure translation to and from the Anthropic
Messages API. Thought signatures survive the round trip (see gemini_request).

This module is the protocol's public face; the work lives beside it:
  gemini_request   Anthropic request → GenerateContentRequest (GeminiOptions says what an endpoint honours)
  gemini_schema    JSON Schema → the Schema subset Gemini accepts
  gemini_response  GenerateContentResponse → Anthropic Message; finishReason and usage
  gemini_stream    streamed GenerateContentResponses → Anthropic stream events
  gemini_errors    Google error responses → Anthropic error kinds; fallback-worthy errors
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from providers import protocol
from providers.gemini_errors import is_context_length_error, is_moderation_error, map_error, retry_delay
from providers.gemini_request import (
    DEFAULT_SUPPORTED,
    FOREIGN_CALL_SIGNATURE,
    GeminiOptions,
    signature_in_tool_id,
    to_gemini_request,
)
from providers.gemini_response import anthropic_usage, error_in_response, from_gemini_response
from providers.gemini_stream import GeminiStreamTranslator
from providers.openai_chat_errors import redact_secrets
from providers.anthropic_input import UnsupportedParameters

__all__ = [
    "DEFAULT_SUPPORTED", "FOREIGN_CALL_SIGNATURE", "GeminiOptions", "GeminiStreamTranslator", "UnsupportedParameters",
    "anthropic_usage", "count_tokens_request", "count_tokens_result", "count_tokens_url", "error_in_response",
    "from_gemini_response", "generate_url", "is_context_length_error", "is_moderation_error", "map_error",
    "redact_secrets", "retry_delay", "signature_in_tool_id", "to_gemini_request", "upstream_headers"]


def _model_url(base_url: str, model: str, method: str) -> str:
    # The base URL ends in the API version (…/v1beta); a model id never needs more than `/` kept.
    return f"{base_url.rstrip('/')}/models/{quote(model, safe='-._~')}:{method}"


def generate_url(base_url: str, model: str, stream: bool) -> str:
    """The generateContent endpoint, or its SSE-streaming twin."""
    if stream:
        return _model_url(base_url, model, "streamGenerateContent") + "?alt=sse"
    return _model_url(base_url, model, "generateContent")


def count_tokens_url(base_url: str, model: str) -> str:
    return _model_url(base_url, model, "countTokens")


def upstream_headers(api_key: str | None, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if extra:
        headers.update(extra)
    if api_key:
        headers["x-goog-api-key"] = api_key
    return headers


def count_tokens_request(body: Mapping[str, Any], *, model: str,
                         options: GeminiOptions | None = None) -> dict[str, Any]:
    """The countTokens request for an Anthropic count_tokens body: the whole GenerateContentRequest,
    so the system instruction and the tools are counted too (the bare `contents` form would skip them).
    Parameters Gemini cannot count are left out silently: a count drops nothing the client sees."""
    options = GeminiOptions(supported=(options or GeminiOptions()).supported)  # never refuse a count
    request, _ = to_gemini_request(body, options=options)
    request.pop("generationConfig", None)
    return {"generateContentRequest": {"model": f"models/{model}", **request}}


def count_tokens_result(response: Mapping[str, Any]) -> int:
    """`totalTokens` of a countTokens answer (0 when absent: an empty prompt)."""
    total = response.get("totalTokens")
    return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else 0


class Gemini(protocol.Translating):
    """The `gemini` protocol: Google's native generateContent, streamGenerateContent and countTokens."""

    read_error = staticmethod(map_error)
    retry_after = staticmethod(retry_delay)  # Google sends no retry-after header, but RetryInfo
    is_context_length_error = staticmethod(is_context_length_error)
    is_moderation_error = staticmethod(is_moderation_error)
    answer_error = staticmethod(error_in_response)

    def options(self, attempt, require_parameters: bool) -> GeminiOptions:
        return GeminiOptions.from_endpoint(attempt.endpoint.supported_parameters,
                                           {"thinking": attempt.endpoint.options.thinking},
                                           require_parameters=require_parameters)

    def translate(self, call: protocol.Call) -> tuple[dict, list[str]]:
        return to_gemini_request(call.request.body, options=call.options)

    def url(self, call: protocol.Call) -> str:
        return generate_url(call.base_url, call.upstream_model, call.request.stream)

    def headers(self, call: protocol.Call) -> dict[str, str]:
        return upstream_headers(call.api_key, extra=call.extra_headers)

    def to_message(self, call: protocol.Call, response: dict) -> dict:
        return from_gemini_response(response, model=call.model, provider=call.provider, message_id=call.message_id)

    def machine(self, call: protocol.Call) -> GeminiStreamTranslator:
        return GeminiStreamTranslator(model=call.model, provider=call.provider, message_id=call.message_id)

    def count_request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        protocol.well_shaped(call)
        body = count_tokens_request(call.request.body, model=call.upstream_model, options=call.options)
        return protocol.UpstreamRequest(count_tokens_url(call.base_url, call.upstream_model), self.headers(call),
                                        orjson.dumps(body))

    def counted(self, raw: bytes) -> dict[str, int] | None:
        answer = protocol.json_or_none(raw)
        return None if answer is None else {"input_tokens": count_tokens_result(answer)}


PROTOCOL = Gemini()
