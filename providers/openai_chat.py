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
