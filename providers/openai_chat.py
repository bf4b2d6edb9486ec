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
from providers.openai_chat_request import (
    DEFAULT_SUPPORTED,
    EFFORT_BY_BUDGET,
    RAW_ARGUMENTS_KEY,
    ChatOptions,
    UnsupportedParameters,
    effort_for_budget,
    to_chat_request,
)
from providers.openai_chat_response import anthropic_usage, from_chat_response
from providers.openai_chat_stream import ChatStreamTranslator
from providers.redaction import redact_bytes

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


class ChatCompletions:
    """The `openai` protocol: `POST {base_url}/chat/completions`."""

    local = False

    def options(self, attempt, require_parameters: bool) -> ChatOptions:
        supported = supported_names(attempt.endpoint.supported_parameters)
        options = attempt.endpoint.options
        return ChatOptions(supported=frozenset(supported & DEFAULT_SUPPORTED | supported & {"top_k"}),
                           require_parameters=require_parameters, max_tokens_field=options.max_tokens_field,
                           reasoning=options.reasoning)

    def request(self, call: protocol.Call) -> protocol.UpstreamRequest:
        stream = call.request.stream
        try:
            chat, dropped = to_chat_request(call.request.body, upstream_model=call.upstream_model,
                                            options=call.options, stream=stream)
        except UnsupportedParameters as exc:
            raise protocol.unsupported(call.provider, exc.parameters) from None
        return protocol.UpstreamRequest(
            chat_completions_url(call.base_url),
            upstream_headers(api_key=call.api_key, stream=stream, extra=call.extra_headers),
            orjson.dumps(chat), dropped=dropped)

    def failure(self, call: protocol.Call, status: int, headers, body: bytes) -> protocol.Failure:
        body = redact_bytes(body, call.secrets)
        client_status, error_type, message = map_error(status, body)
        return protocol.classify(call.provider, status, client_status=client_status, error_type=error_type,
                                 message=message, headers=headers,
                                 context_length=is_context_length_error(status, body),
                                 moderation=is_moderation_error(status, body))

    def message(self, call: protocol.Call, raw: bytes) -> protocol.Answer:
        completion = protocol.json_object(call.provider, raw)
        embedded = error_in_response(completion)
        if embedded is not None:
            raise protocol.Refused(self.failure(call, embedded[0], None, orjson.dumps(
                {"error": {"message": embedded[2], "type": embedded[1]}})))
        message = from_chat_response(completion, model=call.model, provider=call.provider,
                                     stop_sequences=call.request.body.get("stop_sequences") or (),
                                     message_id=call.message_id)
        return protocol.priced(call, message)

    def stream(self, call: protocol.Call) -> protocol.Translated:
        return protocol.Translated(ChatStreamTranslator(
            model=call.model, provider=call.provider, message_id=call.message_id,
            stop_sequences=call.request.body.get("stop_sequences") or ()), call.secrets)

    def count_request(self, call: protocol.Call) -> None:
        return None  # chat completions cannot count: the gateway estimates

    def counted(self, raw: bytes) -> None:
        return None


PROTOCOL = ChatCompletions()
