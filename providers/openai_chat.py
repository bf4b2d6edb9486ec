"""The `openai` protocol: OpenAI-compatible chat completions (OpenAI, Moonshot, MiniMax, Qwen, DeepSeek,
vLLM, Ollama...), as pure translation to and from the Anthropic Messages API.

This module is the protocol's public face; the work lives beside it:
  openai_chat_request   Anthropic request → chat completions request (ChatOptions says what an endpoint honours)
  openai_chat_response  chat completion → Anthropic Message
  openai_chat_stream    chat completion chunks → Anthropic stream events
  openai_chat_errors    error responses → Anthropic error kinds; fallback-worthy errors
"""
from __future__ import annotations

from collections.abc import Mapping

import orjson

from providers import protocol
from providers.openai_chat_errors import (
    error_in_response,
    is_context_length_error,
    is_moderation_error,
    map_error,
    redact_secrets,
)
from providers.anthropic_input import UnsupportedParameters
from providers.openai_chat_request import (
    DEFAULT_SUPPORTED,
    EFFORT_BY_BUDGET,
    RAW_ARGUMENTS_KEY,
    ChatOptions,
    effort_for_budget,
    to_chat_request,
)
from providers.openai_chat_response import anthropic_usage, from_chat_response
from providers.openai_chat_stream import ChatStreamTranslator

__all__ = [
    "ChatOptions", "ChatStreamTranslator", "DEFAULT_SUPPORTED", "EFFORT_BY_BUDGET", "RAW_ARGUMENTS_KEY",
    "UnsupportedParameters", "anthropic_usage", "chat_completions_url", "effort_for_budget", "error_in_response",
    "from_chat_response", "is_context_length_error", "is_moderation_error", "map_error", "redact_secrets",
    "to_chat_request", "upstream_headers"]


def chat_completions_url(base_url: str) -> str:
    """The endpoint under a provider's base URL, which by convention ends in the API version (…/v1)."""
    return base_url.rstrip("/") + "/chat/completions"


def upstream_headers(*, api_key: str | None, stream: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
    if extra:
        headers.update(extra)
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


# Catalog parameter names → the names the chat translator reports and honours.
_IMPLIED_PARAMETERS = {"tools": ("parallel_tool_calls",), "metadata": ("user",),
                       "thinking": ("effort",), "output_config": ("output_format",)}


def supported_names(supported_parameters: frozenset[str] | set[str]) -> set[str]:
    """A catalog endpoint's `supported_parameters` with the translator names each one implies."""
    supported = set(supported_parameters)
    for name, implied in _IMPLIED_PARAMETERS.items():
        if name in supported:
            supported.update(implied)
    return supported


class ChatCompletions(protocol.Translating):
    """The `openai` protocol: `POST {base_url}/chat/completions`."""

    read_error = staticmethod(map_error)
    is_context_length_error = staticmethod(is_context_length_error)
    is_moderation_error = staticmethod(is_moderation_error)
    answer_error = staticmethod(error_in_response)

    def options(self, attempt, require_parameters: bool) -> ChatOptions:
        supported = supported_names(attempt.endpoint.supported_parameters)
        options = attempt.endpoint.options
        return ChatOptions(supported=frozenset(supported & DEFAULT_SUPPORTED | supported & {"top_k"}),
                           require_parameters=require_parameters, max_tokens_field=options.max_tokens_field,
                           reasoning=options.reasoning)

    def translate(self, call: protocol.Call) -> tuple[dict, list[str]]:
        return to_chat_request(call.request.body, upstream_model=call.upstream_model, options=call.options,
                               stream=call.request.stream)

    def url(self, call: protocol.Call) -> str:
        return chat_completions_url(call.base_url)

    def headers(self, call: protocol.Call) -> dict[str, str]:
        return upstream_headers(api_key=call.api_key, stream=call.request.stream, extra=call.extra_headers)

    def embedded_failure(self, call: protocol.Call, mapped: tuple[int, str, str]) -> protocol.Failure:
        # Read again as an error body: its message may say context length or moderation.
        status, error_type, message = mapped
        return self.failure(call, status, None, orjson.dumps({"error": {"message": message, "type": error_type}}))

    def to_message(self, call: protocol.Call, completion: dict) -> dict:
        return from_chat_response(completion, model=call.model, provider=call.provider,
                                  stop_sequences=call.request.body.get("stop_sequences") or (),
                                  message_id=call.message_id)

    def machine(self, call: protocol.Call) -> ChatStreamTranslator:
        return ChatStreamTranslator(model=call.model, provider=call.provider, message_id=call.message_id,
                                    stop_sequences=call.request.body.get("stop_sequences") or ())


PROTOCOL = ChatCompletions()
