"""The `openai-responses` protocol: OpenAI's Responses API (`POST {base_url}/responses`), stateless, as pure
translation to and from the Anthropic Messages API. Models offered only through it (the -pro ones)
are served this way; reasoning survives tool-use turns by travelling inside thinking signatures.

This module is the protocol's public face; the work lives beside it:
  openai_responses_request   Anthropic request → Responses request (ResponsesOptions says what an endpoint honours)
  openai_responses_response  Response → Anthropic Message
  openai_responses_stream    Responses stream events → Anthropic stream events
  openai_responses_errors    failed responses and stream errors → Anthropic error kinds
"""
from __future__ import annotations

from providers import protocol
from providers.openai_chat import ChatCompletions, supported_names, upstream_headers
from providers.anthropic_input import UnsupportedParameters
from providers.openai_chat_request import effort_for_budget
from providers.openai_responses_errors import (
    error_in_response,
    error_of_object,
    is_context_length_error,
    is_moderation_error,
    map_error,
)
from providers.openai_responses_request import (
    DEFAULT_SUPPORTED,
    SIGNATURE_PREFIX,
    ResponsesOptions,
    decode_signature,
    encode_signature,
    to_responses_request,
)
from providers.openai_responses_response import anthropic_usage, from_response
from providers.openai_responses_stream import ResponsesStreamTranslator

__all__ = [
    "DEFAULT_SUPPORTED",
    "SIGNATURE_PREFIX",
    "ResponsesOptions",
    "ResponsesStreamTranslator",
    "UnsupportedParameters",
    "anthropic_usage",
    "decode_signature",
    "effort_for_budget",
    "encode_signature",
    "error_in_response",
    "error_of_object",
    "from_response",
    "is_context_length_error",
    "is_moderation_error",
    "map_error",
    "responses_url",
    "to_responses_request",
    "upstream_headers",
]


def responses_url(base_url: str) -> str:
    """The endpoint under a provider's base URL, which by convention ends in the API version (…/v1)."""
    return base_url.rstrip("/") + "/responses"


class Responses(ChatCompletions):
    """The `openai-responses` protocol: `POST {base_url}/responses`, stateless (`store: false`). HTTP
    errors carry OpenAI's usual error body, read as chat completions read it."""

    answer_error = staticmethod(error_in_response)
    embedded_failure = protocol.Translating.embedded_failure  # a failed Response's code is already read

    def options(self, attempt, require_parameters: bool) -> ResponsesOptions:
        supported = supported_names(attempt.endpoint.supported_parameters)
        return ResponsesOptions(supported=frozenset(supported & DEFAULT_SUPPORTED),
                                reasoning="thinking" in supported, require_parameters=require_parameters)

    def translate(self, call: protocol.Call) -> tuple[dict, list[str]]:
        return to_responses_request(call.request.body, upstream_model=call.upstream_model, options=call.options,
                                    stream=call.request.stream)

    def url(self, call: protocol.Call) -> str:
        return responses_url(call.base_url)

    def to_message(self, call: protocol.Call, response: dict) -> dict:
        return from_response(response, model=call.model, provider=call.provider, message_id=call.message_id)

    def machine(self, call: protocol.Call) -> ResponsesStreamTranslator:
        return ResponsesStreamTranslator(model=call.model, provider=call.provider, message_id=call.message_id)


PROTOCOL = Responses()
