"""Anthropic Messages request → OpenAI Responses API request (`POST /responses`), stateless.

Owns the parameter map and the rewrite of Anthropic turns into Responses input items. The gateway
keeps no conversation state, so every request is `store: false` and asks for the reasoning items'
`encrypted_content`; the answer hands that to the client inside the thinking block's `signature`
(see `encode_signature`), and the next turn puts it back as a `reasoning` input item in the place
it came from, before the calls it led to. What an endpoint supports arrives as data
(`ResponsesOptions`); nothing here knows a model by name.

Names reported as dropped, and accepted in `ResponsesOptions.supported`:
  tools, tool_choice, parallel_tool_calls, temperature, top_p, thinking, effort (output_config.effort),
  output_format (output_config.format), images, documents, user (metadata.user_id, never reported).
Always reported, the Responses API having no equivalent: top_k, stop_sequences, server_tools, the
type of any content block it cannot carry, and any top-level field this module does not know.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from providers.anthropic_input import Drops, list_at, system_text
from providers.base import ROUTER_FIELDS
from providers.openai_chat_request import (
    EFFORT_LEVELS,
    TOOL_ERROR_PREFIX,
    arguments_text,
    effort_level,
    set_function_tools,
    thinking_asked,
    user_id,
)
from providers.openai_content import (
    PartShapes,
    content_parts,
    drop_unsent_assistant_block,
    inner_parts,
    turns,
)

DEFAULT_SUPPORTED = frozenset({
    "tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "thinking", "effort",
    "output_format", "images", "documents", "user"})
MIN_OUTPUT_TOKENS = 16  # the API refuses a smaller max_output_tokens
MAX_SAFETY_IDENTIFIER = 64  # longer user ids travel as their SHA-256 (64 hex digits)

# The signature of a thinking block that carries a Responses reasoning item: this prefix, then the
# base64url (unpadded) of the JSON {"id": item id, "encrypted_content": ...}. The version lets a later
# layout be told apart; any other signature (Anthropic's own, an empty one) carries nothing for us.
SIGNATURE_PREFIX = "oai-responses.v1."

_HANDLED = frozenset({
    "model", "messages", "max_tokens", "stream", "system", "metadata", "tools", "tool_choice", "temperature",
    "top_p", "thinking", "output_config", "output_format",
    "cache_control",  # the API caches prefixes on its own; nothing to translate
    *ROUTER_FIELDS})


@dataclass(frozen=True)
class ResponsesOptions:
    """What one Responses endpoint can honour.

    `reasoning` says the model reasons: thinking maps to `reasoning.effort` (one of
    `reasoning_efforts`, the levels the model accepts) with `reasoning.summary` so that summaries
    come back as thinking, and encrypted reasoning is asked for so that it can travel back. Without
    it, `thinking` is dropped and reported and no reasoning parameter is sent (non-reasoning models
    refuse them). `output_config.effort` alone sets the effort and, as with Anthropic, shows no thinking.
    """
    supported: frozenset[str] = DEFAULT_SUPPORTED
    reasoning: bool = True
    reasoning_efforts: tuple[str, ...] = ("minimal", "low", "medium", "high")
    reasoning_summary: str = "auto"
    require_parameters: bool = False

    def __post_init__(self) -> None:
        unknown = [level for level in self.reasoning_efforts if level not in EFFORT_LEVELS]
        if unknown or not self.reasoning_efforts:
            raise ValueError(f"reasoning_efforts must be a non-empty subset of {EFFORT_LEVELS}")
        if self.reasoning_summary not in ("auto", "concise", "detailed"):
            raise ValueError("reasoning_summary must be auto, concise or detailed, "
                             f"not {self.reasoning_summary!r}")


@dataclass
class _Translation(Drops):
    options: ResponsesOptions = field(default_factory=ResponsesOptions)


def to_responses_request(body: Mapping[str, Any], *, upstream_model: str, options: ResponsesOptions,
                         stream: bool) -> tuple[dict[str, Any], list[str]]:
    """The Responses request for `body`, and the Anthropic parameters it had to drop.

    Raises UnsupportedParameters instead of dropping when `options.require_parameters` is set.
    """
    t = _Translation(options.supported, options.require_parameters, options=options)
    request: dict[str, Any] = {"model": upstream_model}
    instructions = system_text(body.get("system"))
    if instructions:
        request["instructions"] = instructions
    request["input"] = _input(body, t)
    if isinstance(body.get("max_tokens"), int) and not isinstance(body["max_tokens"], bool):
        request["max_output_tokens"] = max(body["max_tokens"], MIN_OUTPUT_TOKENS)
    request.update(t.honoured(body, ("temperature", "top_p")))
    for name in ("top_k", "stop_sequences"):
        if body.get(name):
            t.drop(name)
    _tools(body, request, t)
    carried = _reasoning(body, request, t)
    _output_format(body, request, t)
    _user(body, request, t)
    request["store"] = False
    if carried:
        request["include"] = ["reasoning.encrypted_content"]
    if stream:
        request["stream"] = True
    t.unknown_fields(body, (*_HANDLED, "top_k", "stop_sequences"))
    return request, t.result()


# -- the reasoning signature ---------------------------------------------------------------------

def encode_signature(item_id: str, encrypted_content: str) -> str:
    """A thinking block signature carrying one reasoning item (see SIGNATURE_PREFIX)."""
    payload = orjson.dumps({"id": item_id, "encrypted_content": encrypted_content})
    return SIGNATURE_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def decode_signature(signature: Any) -> tuple[str, str] | None:
    """(item id, encrypted_content) of a signature made by encode_signature, else None."""
    if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
        return None
    packed = signature[len(SIGNATURE_PREFIX):]
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    item_id, encrypted = payload.get("id"), payload.get("encrypted_content")
    if isinstance(item_id, str) and item_id and isinstance(encrypted, str) and encrypted:
        return item_id, encrypted
    return None


# -- parameters ----------------------------------------------------------------------------------

def _function_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"type": "function", "name": tool["name"]}
    if isinstance(tool.get("description"), str) and tool["description"]:
        function["description"] = tool["description"]
    function["parameters"] = dict(tool["input_schema"])
    # Strict mode rewrites what a schema allows (every property required, no extras); only on request.
    function["strict"] = tool.get("strict") is True
    return function


def _tools(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    set_function_tools(body, list_at(body, "tools"), request, t, function=_function_tool,
                       forced=lambda name: {"type": "function", "name": name})


def _reasoning(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> bool:
    """Sets `reasoning`; True when the answer's reasoning is to come back as thinking blocks.

    Only a request that asks for thinking gets thinking blocks, as from Anthropic: without it no
    summary and no encrypted content are asked for, so reasoning items leave no block behind.
    """
    reasons = t.options.reasoning and t.supports("thinking")
    asked = thinking_asked(body, t, effort_honoured=reasons)
    if isinstance(asked.budget, bool):
        asked = replace(asked, budget=None)  # unlike chat's, a JSON true is no budget here
    if not reasons:
        if asked.wanted:
            t.drop("thinking")
        return False
    reasoning: dict[str, Any] = {}
    level = effort_level(asked, t.options.reasoning_efforts)  # adaptive thinks at the model's own effort
    if level:
        reasoning["effort"] = level
    if asked.wanted:
        reasoning["summary"] = t.options.reasoning_summary
    if reasoning:
        request["reasoning"] = reasoning
    return bool(asked.wanted)


def _output_format(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    schema = t.output_schema(body)
    if schema is not None:
        request["text"] = {"format": {"type": "json_schema", "name": "output", "schema": dict(schema),
                                      "strict": True}}


def safety_identifier(user_id: str) -> str:
    """The user id as OpenAI's `safety_identifier` (at most 64 characters: longer ids are hashed)."""
    if len(user_id) <= MAX_SAFETY_IDENTIFIER:
        return user_id
    return hashlib.sha256(user_id.encode()).hexdigest()


def _user(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    user = user_id(body, t)
    if user:
        request["safety_identifier"] = safety_identifier(user)


# -- input items ---------------------------------------------------------------------------------

def _input(body: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for is_assistant, blocks in turns(list_at(body, "messages")):
        items.extend(_assistant_items(blocks, t) if is_assistant else _user_items(blocks, t))
    return items


# The content parts the Responses API takes: an image with its detail level, a PDF by data or by URL.
RESPONSES_PARTS = PartShapes(
    text="input_text",
    image=lambda url: {"type": "input_image", "image_url": url, "detail": "auto"},
    pdf=lambda filename, data_url: {"type": "input_file", "filename": filename, "file_data": data_url},
    document_url=lambda url: {"type": "input_file", "file_url": url})


def _user_items(blocks: Iterable[Mapping[str, Any]], t: _Translation) -> list[dict[str, Any]]:
    """Tool results first, as function_call_output items right after the calls they answer, then
    one user message with the rest."""
    items: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            items.append({"type": "function_call_output", "call_id": str(block.get("tool_use_id", "")),
                          "output": _tool_output(block, t)})
        else:
            parts.extend(content_parts(block, t, RESPONSES_PARTS))
    if parts:
        items.append({"type": "message", "role": "user", "content": parts})
    return items


def _tool_output(block: Mapping[str, Any], t: _Translation) -> str | list[dict[str, Any]]:
    parts = inner_parts(block.get("content"), t, RESPONSES_PARTS)
    if block.get("is_error"):
        if parts and parts[0]["type"] == "input_text":
            parts[0] = {"type": "input_text", "text": TOOL_ERROR_PREFIX + parts[0]["text"]}
        else:
            parts.insert(0, {"type": "input_text", "text": TOOL_ERROR_PREFIX.rstrip(": ")})
    if all(p["type"] == "input_text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _assistant_items(blocks: Sequence[Mapping[str, Any]], t: _Translation) -> list[dict[str, Any]]:
    """The assistant's blocks as items in their order: carried reasoning, text, function calls.

    Assistant text travels as a plain-string message, the one assistant form the API takes without
    an item id: an id would name an item that, with store off, the API never kept.
    """
    items: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush_text() -> None:
        # Text blocks in a row are pieces of one text (citations split it), hence no separator.
        text = "".join(texts)
        texts.clear()
        if text:
            items.append({"type": "message", "role": "assistant", "content": text})

    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            continue
        flush_text()
        if kind == "tool_use":
            items.append({"type": "function_call", "call_id": str(block.get("id", "")),
                          "name": str(block.get("name", "")), "arguments": arguments_text(block.get("input"))})
        elif kind == "thinking":
            carried = decode_signature(block.get("signature"))
            if carried is not None:
                summary = block.get("thinking")
                items.append({"type": "reasoning", "id": carried[0], "encrypted_content": carried[1],
                              "summary": [{"type": "summary_text", "text": summary}]
                              if isinstance(summary, str) and summary else []})
        else:
            drop_unsent_assistant_block(kind, t)
    flush_text()
    # A reasoning item must be followed by the item it led to; one left last in a turn is refused.
    while items and items[-1]["type"] == "reasoning":
        items.pop()
    return items
