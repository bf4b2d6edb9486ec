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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.anthropic_input import Drops
from providers.base import ROUTER_FIELDS

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


def mapping_at(container: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """container[key] when it is a JSON object, else {}: inputs are read, never trusted."""
    value = container.get(key)
    return value if isinstance(value, Mapping) else {}


def list_at(container: Mapping[str, Any], key: str) -> list[Any]:
    """container[key] when it is a JSON array, else []."""
    value = container.get(key)
    return value if isinstance(value, list) else []


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
    for name in _SAMPLING:
        if body.get(name) is not None:
            if t.supports(name):
                request[name] = body[name]
            else:
                t.drop(name)
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


def _is_custom_tool(tool: Mapping[str, Any]) -> bool:
    return (tool.get("type") in (None, "custom") and isinstance(tool.get("name"), str)
            and isinstance(tool.get("input_schema"), Mapping))


def _function(tool: Mapping[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = dict(tool["input_schema"])
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tools(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    tools = [tool for tool in body.get("tools") or () if isinstance(tool, Mapping)]
    if any(not _is_custom_tool(tool) for tool in tools):
        t.drop("server_tools")
    functions = [_function(tool) for tool in tools if _is_custom_tool(tool)]
    if functions and not t.supports("tools"):
        t.drop("tools")
        functions = []
    if functions:
        request["tools"] = functions
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping):
        return
    kind = choice.get("type")
    names = {f["function"]["name"] for f in functions}
    if kind == "auto" or (kind == "none" and not functions):
        pass  # the upstream's default already, or nothing to refrain from
    elif not functions or not t.supports("tool_choice"):
        t.drop("tool_choice")
    elif kind in CHAT_TOOL_CHOICE:
        request["tool_choice"] = CHAT_TOOL_CHOICE[kind]
    elif kind == "tool" and choice.get("name") in names:
        request["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        t.drop("tool_choice")
    if choice.get("disable_parallel_tool_use") and functions and kind != "none":
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


def _reasoning(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    thinking = mapping_at(body, "thinking")
    output_config = mapping_at(body, "output_config")
    effort = output_config.get("effort") if isinstance(output_config.get("effort"), str) else None
    kind = thinking.get("type")
    wanted = None if kind is None else kind != "disabled"  # adaptive and between_tools think too
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    budget = budget if isinstance(budget, int) else None
    mode = t.options.reasoning if t.supports("thinking") else None
    if effort and not (mode == "reasoning_effort" and t.supports("effort")):
        t.drop("effort")
        effort = None

    if mode == "reasoning_effort":
        level = effort or (effort_for_budget(budget) if budget is not None else None)
        if wanted is False and not effort:
            level = "none" if "none" in t.options.reasoning_efforts else None
        if level:
            request["reasoning_effort"] = nearest_effort(level, t.options.reasoning_efforts)
        return
    if wanted is None:
        return
    if mode == "enable_thinking":
        request["enable_thinking"] = wanted
        if wanted and budget is not None:
            request["thinking_budget"] = budget
    elif mode == "thinking":
        request["thinking"] = {"type": "enabled" if wanted else "disabled"}
    elif wanted:
        t.drop("thinking")


def _output_format(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    output_config = mapping_at(body, "output_config")
    for name in output_config:
        if name not in ("effort", "format"):
            t.drop(f"output_config.{name}")
    fmt = output_config.get("format") or body.get("output_format")
    if not isinstance(fmt, Mapping):
        return
    is_schema = fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), Mapping)
    if not is_schema or not t.supports("output_format"):
        t.drop("output_format")
        return
    request["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": dict(fmt["schema"]), "strict": True}}


def _user(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    metadata = mapping_at(body, "metadata")
    user = metadata.get("user_id") or body.get("user")
    if isinstance(user, str) and user and t.supports("user"):
        request["user"] = user


# -- messages ------------------------------------------------------------------------------------

def _messages(body: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())
        blocks = [b for b in blocks if isinstance(b, Mapping)]
        if message.get("role") == "assistant":
            messages.extend(_assistant_turn(blocks, t))
        else:
            messages.extend(_user_turn(blocks, t))
    return messages


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(b["text"] for b in system
                           if isinstance(b, Mapping) and b.get("type") == "text" and b.get("text"))
    return ""


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
            parts.extend(_content_parts(block, t))
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
    content = block.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())
    texts: list[str] = []
    extra: list[dict[str, Any]] = []
    for inner in blocks:
        if not isinstance(inner, Mapping):
            continue
        for part in _content_parts(inner, t):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                extra.append(part)
    text = "\n\n".join(texts)
    if block.get("is_error"):
        text = TOOL_ERROR_PREFIX + text if text else TOOL_ERROR_PREFIX.rstrip(": ")
    return text, extra


def _content_parts(block: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    """One user-side Anthropic block as chat content parts ([] when it is dropped)."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return [{"type": "text", "text": text}] if isinstance(text, str) and text else []
    if kind == "image":
        return _image_part(block, t)
    if kind == "document":
        return _document_parts(block, t)
    if kind in ("thinking", "redacted_thinking"):
        return []
    t.drop(str(kind))
    return []


def image_source_url(block: Mapping[str, Any]) -> str:
    """An Anthropic image block's source as the URL OpenAI's APIs take: a data URL for base64, the
    URL itself, or "" for a Files API id (which means nothing to another provider)."""
    source = mapping_at(block, "source")
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", ""))
    return ""


def image_source_for_url(url: str) -> dict[str, str]:
    """The Anthropic image source for a URL OpenAI's APIs took: base64 for a data URL, else the URL."""
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type or "image/png", "data": data}
    return {"type": "url", "url": url}


def _image_part(block: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    url = image_source_url(block)
    if not url or not t.supports("images"):
        t.drop("images")
        return []
    return [{"type": "image_url", "image_url": {"url": url}}]


def _document_parts(block: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    source = mapping_at(block, "source")
    title = block.get("title") if isinstance(block.get("title"), str) else ""
    kind = source.get("type")
    if kind == "text":
        text = str(source.get("data", ""))
        return [{"type": "text", "text": f"{title}\n\n{text}" if title else text}] if text else []
    if kind == "content":
        inner = source.get("content")
        blocks = [{"type": "text", "text": inner}] if isinstance(inner, str) else list(inner or ())
        return [p for b in blocks if isinstance(b, Mapping) for p in _content_parts(b, t)]
    if kind == "base64" and source.get("media_type") == "application/pdf" and t.supports("documents"):
        return [{"type": "file", "file": {"filename": title or "document.pdf",
                                          "file_data": f"data:application/pdf;base64,{source.get('data', '')}"}}]
    t.drop("documents")  # a URL or Files API id would need fetching; other media types have no part
    return []


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
        elif kind == "redacted_thinking":
            pass  # encrypted for Anthropic's models only
        elif kind == "server_tool_use" or str(kind).endswith("_tool_result"):
            t.drop("server_tools")
        else:
            t.drop(str(kind))
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
