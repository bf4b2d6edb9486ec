"""Anthropic Messages request → OpenAI chat completions request.

Owns the parameter map (what each Anthropic field becomes, and when an endpoint cannot honour it)
and the rewrite of Anthropic turns into chat messages. What an endpoint supports arrives as data
(`ChatOptions`, built by the caller from the catalog); nothing here knows a vendor by name.

Names reported as dropped, and accepted in `ChatOptions.supported`:
  tools, tool_choice, parallel_tool_calls, temperature, top_p, top_k, stop_sequences, thinking,
  effort (output_config.effort), output_format (output_config.format), images, documents, user
  (metadata.user_id, never reported: it is bookkeeping, not meaning).
Also reported, never supported by this protocol: server_tools (Anthropic-defined and server tools
such as web_search), the type of any content block with no chat equivalent, and any top-level
field this module does not know.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.anthropic_input import Drops, client_tools, mapping_at
from providers.base import ROUTER_FIELDS
from providers.openai_content import (
    PartShapes,
    content_parts,
    drop_unsent_assistant_block,
    inner_parts,
    turns,
)

# Thinking budgets map onto reasoning effort by these bounds (budget_tokens below the bound → level):
# under 4,096 tokens is "low", under 16,384 "medium", anything larger "high". Anthropic's minimum
# budget is 1,024; the bounds split the budgets in common use (quick 1k-4k, moderate 4k-16k, deep
# 16k and up) across OpenAI's three classic levels, never reaching the costlier xhigh/max by budget.
EFFORT_BY_BUDGET: tuple[tuple[int, str], ...] = ((4096, "low"), (16384, "medium"))
EFFORT_FOR_LARGE_BUDGET = "high"
# Every level either API names, least effort first; a level an endpoint lacks becomes its nearest.
EFFORT_LEVELS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

# A tool_use input that arrived as arguments which were not a JSON object is kept under this key
# (see openai_chat_response); sending such a block back restores the original arguments text.
RAW_ARGUMENTS_KEY = "_raw_arguments"
TOOL_ERROR_PREFIX = "Error: "
# Anthropic tool_choice types and the chat completions tool_choice strings that mean the same.
CHAT_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
# The smallest thinking budget Anthropic accepts: the lower bound of the lowest effort level.
MIN_THINKING_BUDGET = 1024
REASONING_MODES = ("reasoning_effort", "enable_thinking", "thinking")

DEFAULT_SUPPORTED = frozenset({
    "tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "stop_sequences", "thinking",
    "effort", "output_format", "images", "documents", "user"})

# Top-level fields handled below, or deliberately ignored without a report.
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "stream", "system", "metadata", "tools", "tool_choice", "temperature",
    "top_p", "top_k", "stop_sequences", "thinking", "output_config", "output_format",
    "cache_control",  # prompt caching is the upstream's own business; not a semantic parameter
    *ROUTER_FIELDS})
_SAMPLING = ("temperature", "top_p", "top_k")


@dataclass(frozen=True)
class ChatOptions:
    """What one OpenAI-compatible endpoint can honour.

    `reasoning` says how Anthropic's `thinking` travels: "reasoning_effort" (OpenAI and most others:
    low/medium/high), "enable_thinking" (Qwen: `enable_thinking` + `thinking_budget`), "thinking"
    (DeepSeek, GLM, Kimi: `thinking: {"type": "enabled"|"disabled"}`), or None.
    `reasoning_efforts` lists the effort levels the endpoint accepts; `reasoning_history` sends earlier
    thinking back as `reasoning_content`, which DeepSeek and Kimi thinking models want between tool calls.
    """
    max_tokens_field: str = "max_tokens"
    supported: frozenset[str] = DEFAULT_SUPPORTED
    reasoning: str | None = "reasoning_effort"
    require_parameters: bool = False
    reasoning_efforts: tuple[str, ...] = ("low", "medium", "high")
    reasoning_history: bool = False
    max_stop_sequences: int = 4  # OpenAI's limit

    def __post_init__(self) -> None:
        if self.max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError("max_tokens_field must be max_tokens or max_completion_tokens, "
                             f"not {self.max_tokens_field!r}")
        if self.reasoning is not None and self.reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning must be one of {REASONING_MODES} or None, not {self.reasoning!r}")
        unknown = [level for level in self.reasoning_efforts if level not in EFFORT_LEVELS]
        if unknown or not self.reasoning_efforts:
            raise ValueError(f"reasoning_efforts must be a non-empty subset of {EFFORT_LEVELS}")


@dataclass
class _Translation(Drops):
    options: ChatOptions = field(default_factory=ChatOptions)


def to_chat_request(body: Mapping[str, Any], *, upstream_model: str, options: ChatOptions,
                    stream: bool) -> tuple[dict[str, Any], list[str]]:
    """The chat completions request for `body`, and the Anthropic parameters it had to drop.

    Raises UnsupportedParameters instead of dropping when `options.require_parameters` is set.
    """
    t = _Translation(options.supported, options.require_parameters, options=options)
    request: dict[str, Any] = {"model": upstream_model, "messages": _messages(body, t)}
    if isinstance(body.get("max_tokens"), int):
        request[options.max_tokens_field] = body["max_tokens"]
    request.update(t.honoured(body, _SAMPLING))
    _stop(body, request, t)
    _tools(body, request, t)
    _reasoning(body, request, t)
    _output_format(body, request, t)
    _user(body, request, t)
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    t.unknown_fields(body, _HANDLED)
    return request, t.result()


# -- parameters ----------------------------------------------------------------------------------

def _stop(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    sequences = [s for s in body.get("stop_sequences") or () if isinstance(s, str) and s]
    if not sequences:
        return
    if not t.supports("stop_sequences"):
        t.drop("stop_sequences")
        return
    limit = t.options.max_stop_sequences
    request["stop"] = sequences[:limit]
    if len(sequences) > limit:
        t.drop("stop_sequences")  # partly honoured is not honoured


def _function(tool: Mapping[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = dict(tool["input_schema"])
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tools(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    set_function_tools(body, body.get("tools") or (), request, t, function=_function,
                       forced=lambda name: {"type": "function", "function": {"name": name}})


def set_function_tools(body: Mapping[str, Any], tools: Iterable[Any], request: dict[str, Any], t: Drops, *,
                       function: Callable[[Mapping[str, Any]], dict[str, Any]],
                       forced: Callable[[str], dict[str, Any]]) -> None:
    """Sets `tools`, `tool_choice` and `parallel_tool_calls` as both OpenAI APIs take them, which
    differ only in how a function tool is written (`function`, from a client tool) and how the choice
    of one tool by name is (`forced`). Anthropic-defined and server tools have no function form."""
    custom = client_tools(tools, t)
    if custom:
        request["tools"] = [function(tool) for tool in custom]
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping):
        return
    kind = choice.get("type")
    if kind == "auto" or (kind == "none" and not custom):
        pass  # the upstream's default already, or nothing to refrain from
    elif not custom or not t.supports("tool_choice"):
        t.drop("tool_choice")
    elif kind in CHAT_TOOL_CHOICE:
        request["tool_choice"] = CHAT_TOOL_CHOICE[kind]
    elif kind == "tool" and choice.get("name") in {tool["name"] for tool in custom}:
        request["tool_choice"] = forced(choice["name"])
    else:
        t.drop("tool_choice")
    if choice.get("disable_parallel_tool_use") and custom and kind != "none":
        if t.supports("parallel_tool_calls"):
            request["parallel_tool_calls"] = False
        else:
            t.drop("parallel_tool_calls")


def effort_for_budget(budget_tokens: int) -> str:
    """The reasoning effort a thinking budget stands for (bounds in EFFORT_BY_BUDGET)."""
    for bound, level in EFFORT_BY_BUDGET:
        if budget_tokens < bound:
            return level
    return EFFORT_FOR_LARGE_BUDGET


def budget_for_effort(level: str) -> int:
    """The thinking budget an effort level stands for: the smallest budget `effort_for_budget` reads
    as that level, so the two directions agree (a level it never yields counts as its nearest)."""
    levels = [lvl for _, lvl in EFFORT_BY_BUDGET] + [EFFORT_FOR_LARGE_BUDGET]
    bounds = [MIN_THINKING_BUDGET] + [bound for bound, _ in EFFORT_BY_BUDGET]
    return dict(zip(levels, bounds))[nearest_effort(level, levels)]


def nearest_effort(level: str, accepted: Sequence[str]) -> str:
    """`level` if accepted, else the highest accepted level below it, else the lowest accepted."""
    if level in accepted:
        return level
    rank = EFFORT_LEVELS.index(level) if level in EFFORT_LEVELS else EFFORT_LEVELS.index("medium")
    ordered = sorted(accepted, key=EFFORT_LEVELS.index)
    below = [a for a in ordered if EFFORT_LEVELS.index(a) < rank]
    return below[-1] if below else ordered[0]


@dataclass(frozen=True)
class ThinkingAsked:
    """What a request asks of reasoning, read alike for both OpenAI APIs."""
    wanted: bool | None  # None when it says nothing; adaptive and between_tools think too
    budget: int | None  # an enabled thinking's budget_tokens
    effort: str | None  # output_config.effort, unless dropped


def thinking_asked(body: Mapping[str, Any], t: Drops, *, effort_honoured: bool) -> ThinkingAsked:
    """The request's thinking and effort; the effort is dropped unless the endpoint sets one
    (`effort_honoured`) and supports `effort`."""
    thinking = mapping_at(body, "thinking")
    output_config = mapping_at(body, "output_config")
    effort = output_config.get("effort") if isinstance(output_config.get("effort"), str) else None
    kind = thinking.get("type")
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    if effort and not (effort_honoured and t.supports("effort")):
        t.drop("effort")
        effort = None
    return ThinkingAsked(wanted=None if kind is None else kind != "disabled",
                         budget=budget if isinstance(budget, int) else None, effort=effort)


def effort_level(asked: ThinkingAsked, accepted: Sequence[str]) -> str | None:
    """The effort level to send, among `accepted`: the effort asked for, else the one the budget
    stands for; thinking turned off is "none" where that level exists, else no level at all."""
    level = asked.effort or (effort_for_budget(asked.budget) if asked.budget is not None else None)
    if asked.wanted is False and not asked.effort:
        level = "none" if "none" in accepted else None
    return nearest_effort(level, accepted) if level else None


def _reasoning(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    mode = t.options.reasoning if t.supports("thinking") else None
    asked = thinking_asked(body, t, effort_honoured=mode == "reasoning_effort")
    if mode == "reasoning_effort":
        level = effort_level(asked, t.options.reasoning_efforts)
        if level:
            request["reasoning_effort"] = level
        return
    if asked.wanted is None:
        return
    if mode == "enable_thinking":
        request["enable_thinking"] = asked.wanted
        if asked.wanted and asked.budget is not None:
            request["thinking_budget"] = asked.budget
    elif mode == "thinking":
        request["thinking"] = {"type": "enabled" if asked.wanted else "disabled"}
    elif asked.wanted:
        t.drop("thinking")


def _output_format(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    schema = t.output_schema(body)
    if schema is not None:
        request["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "output", "schema": dict(schema), "strict": True}}


def user_id(body: Mapping[str, Any], t: Drops) -> str | None:
    """The end user's id (metadata.user_id, or a top-level `user`) where the endpoint takes one."""
    user = mapping_at(body, "metadata").get("user_id") or body.get("user")
    return user if isinstance(user, str) and user and t.supports("user") else None


def _user(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    user = user_id(body, t)
    if user:
        request["user"] = user


# -- messages ------------------------------------------------------------------------------------

def _messages(body: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for is_assistant, blocks in turns(body.get("messages") or ()):
        messages.extend(_assistant_turn(blocks, t) if is_assistant else _user_turn(blocks, t))
    return messages


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(b["text"] for b in system
                           if isinstance(b, Mapping) and b.get("type") == "text" and b.get("text"))
    return ""


# The content parts chat completions takes; a PDF travels as a file part, a document URL not at all.
CHAT_PARTS = PartShapes(
    text="text",
    image=lambda url: {"type": "image_url", "image_url": {"url": url}},
    pdf=lambda filename, data_url: {"type": "file", "file": {"filename": filename, "file_data": data_url}})


def _user_turn(blocks: Iterable[Mapping[str, Any]], t: _Translation) -> list[dict[str, Any]]:
    """Tool results first, each its own `tool` message, so they directly follow the assistant's
    tool_calls as chat completions require; then one user message with what is left, led by any
    images the tool results carried (a `tool` message takes text only)."""
    tool_messages: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            text, extra = _tool_result(block, t)
            tool_id = str(block.get("tool_use_id", ""))
            tool_messages.append({"role": "tool", "tool_call_id": tool_id, "content": text})
            if extra:
                tool_images.append({"type": "text", "text": f"[attachments of tool result {tool_id}]"})
                tool_images.extend(extra)
        else:
            parts.extend(content_parts(block, t, CHAT_PARTS))
    turn = tool_messages
    if tool_images or parts:
        turn.append({"role": "user", "content": _user_content(tool_images + parts)})
    return turn


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # Plain text travels as a string: every OpenAI-compatible server accepts that form.
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _tool_result(block: Mapping[str, Any], t: _Translation) -> tuple[str, list[dict[str, Any]]]:
    """The tool message's text, and the parts it cannot take (they follow in the user message)."""
    parts = inner_parts(block.get("content"), t, CHAT_PARTS)
    text = "\n\n".join(p["text"] for p in parts if p["type"] == "text")
    if block.get("is_error"):
        text = TOOL_ERROR_PREFIX + text if text else TOOL_ERROR_PREFIX.rstrip(": ")
    return text, [p for p in parts if p["type"] != "text"]


def _assistant_turn(blocks: Iterable[Mapping[str, Any]], t: _Translation) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id", "")), "type": "function",
                          "function": {"name": str(block.get("name", "")),
                                       "arguments": arguments_text(block.get("input"))}})
        elif kind == "thinking":
            if t.options.reasoning_history and block.get("thinking"):
                reasoning.append(str(block["thinking"]))
        else:
            drop_unsent_assistant_block(kind, t)
    # Text blocks of one answer are pieces of one text (citations split it), hence no separator.
    text = "".join(texts)
    if not text and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
    return [message]


def arguments_text(tool_input: Any) -> str:
    """A tool_use input as chat `arguments`: compact JSON, or the raw text kept from a bad reply."""
    if isinstance(tool_input, Mapping) and set(tool_input) == {RAW_ARGUMENTS_KEY} \
            and isinstance(tool_input[RAW_ARGUMENTS_KEY], str):
        return tool_input[RAW_ARGUMENTS_KEY]
    return json.dumps(tool_input if tool_input is not None else {}, ensure_ascii=False, separators=(",", ":"))
