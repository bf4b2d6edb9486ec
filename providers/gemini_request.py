"""Anthropic Messages request → Gemini `GenerateContentRequest` (native API, `models/{model}:generateContent`).

Owns the parameter map and the rewrite of Anthropic turns into Gemini `contents`. What an endpoint
supports arrives as data (`GeminiOptions`); nothing here knows a model by name.

Thought signatures travel inside what Anthropic clients already send back unchanged:
  - a `functionCall` part's `thoughtSignature` (the one Gemini 3 requires on the next turn) is carried
    in the tool_use block's id: `toolu_<24 hex>_ts_<signature, base64url without padding>`. Ids are
    the one field every client returns intact, since its tool_result must name it;
  - a thought part's signature is the thinking block's `signature`, prefixed `gemini:`, so that a
    thinking block from another model is never sent to Gemini as a signature.
Both go back on the same part of the next request. A functionCall whose tool_use carries no
signature (a history from another model) gets `options.foreign_call_signature`, the value Google
documents for histories Gemini did not write, on the first call of its turn. Signatures on plain
text parts are not carried: Gemini validates only function-call signatures.

Names reported as dropped, and accepted in `GeminiOptions.supported`:
  tools, tool_choice, temperature, top_p, top_k, stop_sequences, thinking, output_format, images,
  documents. Also reported: parallel_tool_calls (Gemini cannot forbid them), effort, server_tools,
  `input_schema.<keyword>` / `output_format.<keyword>` for JSON Schema parts Gemini rejects, any
  content block without a Gemini form, and any top-level field this module does not know.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.base import ROUTER_FIELDS
from providers.gemini_schema import reduce_schema
from providers.openai_chat_request import UnsupportedParameters, effort_for_budget, list_at, mapping_at

DEFAULT_SUPPORTED = frozenset({
    "tools", "tool_choice", "temperature", "top_p", "top_k", "stop_sequences", "thinking", "output_format",
    "images", "documents"})
THINKING_MODES = ("budget", "level")
THINKING_SIGNATURE_PREFIX = "gemini:"
TOOL_ID_PREFIX = "toolu_"
TOOL_SIGNATURE_MARK = "_ts_"
# Documented by Google for function calls Gemini did not produce (histories from other models).
FOREIGN_CALL_SIGNATURE = "skip_thought_signature_validator"
MAX_STOP_SEQUENCES = 5  # Gemini's limit
# Anthropic images by URL carry no media type; Gemini's fileData wants one.
_MEDIA_BY_EXTENSION = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
                       "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf"}
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "stream", "system", "metadata", "tools", "tool_choice", "temperature",
    "top_p", "top_k", "stop_sequences", "thinking", "output_config", "output_format", "cache_control",
    *ROUTER_FIELDS})
_SAMPLING = (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"))
_TOOL_ID = re.compile(r"^toolu_[0-9a-f]{24}_ts_([A-Za-z0-9_-]+)$")
_TO_URLSAFE = str.maketrans("+/", "-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class GeminiOptions:
    """What one Gemini endpoint can honour.

    `thinking` says how Anthropic's `thinking` travels: "budget" (`thinkingConfig.thinkingBudget`,
    every thinking Gemini model) or "level" (`thinkingLevel`, Gemini 3's preferred form, from the
    budget by the bounds the chat translator uses). `can_disable_thinking`: `thinking: disabled` sends
    budget 0 (Flash models) or, where the model cannot stop thinking (Pro), nothing.
    """
    supported: frozenset[str] = DEFAULT_SUPPORTED
    require_parameters: bool = False
    thinking: str = "budget"
    can_disable_thinking: bool = True
    thinking_levels: tuple[str, ...] = ("low", "medium", "high")
    foreign_call_signature: str | None = FOREIGN_CALL_SIGNATURE

    def __post_init__(self) -> None:
        if self.thinking not in THINKING_MODES:
            raise ValueError(f"thinking must be one of {THINKING_MODES}, not {self.thinking!r}")


@dataclass
class _Translation:
    options: GeminiOptions
    dropped: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    tool_names: dict[str, str] = field(default_factory=dict)  # tool_use id → function name

    def drop(self, name: str) -> None:
        self.dropped[name] = None

    def supports(self, name: str) -> bool:
        return name in self.options.supported


# -- signatures in ids -----------------------------------------------------------------------------

def tool_use_id(digest: str, signature: str | None) -> str:
    """The tool_use id of a Gemini function call: `digest` (24 hex) plus the call's signature if any,
    in base64's URL-safe alphabet without padding (ids allow only letters, digits, `_` and `-`)."""
    base = TOOL_ID_PREFIX + digest
    if not signature:
        return base
    return base + TOOL_SIGNATURE_MARK + signature.rstrip("=").translate(_TO_URLSAFE)


def signature_in_tool_id(tool_id: str) -> str | None:
    """The thoughtSignature a tool_use id carries (standard base64, as Gemini sent it), else None."""
    match = _TOOL_ID.match(tool_id)
    if match is None:
        return None
    encoded = match.group(1).translate(_FROM_URLSAFE)
    return encoded + "=" * (-len(encoded) % 4)


def thinking_signature(thought_signature: str) -> str:
    return THINKING_SIGNATURE_PREFIX + thought_signature


def signature_of_thinking(signature: Any) -> str | None:
    if isinstance(signature, str) and signature.startswith(THINKING_SIGNATURE_PREFIX):
        return signature[len(THINKING_SIGNATURE_PREFIX):] or None
    return None


# -- the request -----------------------------------------------------------------------------------

def to_gemini_request(body: Mapping[str, Any], *, options: GeminiOptions) -> tuple[dict[str, Any], list[str]]:
    """The GenerateContentRequest for `body`, and the Anthropic parameters it had to drop.

    The model travels in the URL (`generate_url`), not in the body. Raises UnsupportedParameters
    instead of dropping when `options.require_parameters` is set.
    """
    t = _Translation(options)
    request: dict[str, Any] = {"contents": _contents(body, t)}
    system = _system_text(body.get("system"))
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    if isinstance(body.get("max_tokens"), int):
        config["maxOutputTokens"] = body["max_tokens"]
    for name, gemini_name in _SAMPLING:
        if body.get(name) is not None:
            if t.supports(name):
                config[gemini_name] = body[name]
            else:
                t.drop(name)
    _stop(body, config, t)
    _tools(body, request, t)
    _thinking(body, config, t)
    _output_format(body, config, t)
    if config:
        request["generationConfig"] = config
    for name in body:
        if name not in _HANDLED and not (name == "service_tier" and body[name] == "auto"):
            t.drop(name)
    dropped = list(t.dropped)
    if dropped and options.require_parameters:
        raise UnsupportedParameters(dropped)
    return request, dropped


def _stop(body: Mapping[str, Any], config: dict[str, Any], t: _Translation) -> None:
    sequences = [s for s in body.get("stop_sequences") or () if isinstance(s, str) and s]
    if not sequences:
        return
    if not t.supports("stop_sequences"):
        t.drop("stop_sequences")
        return
    config["stopSequences"] = sequences[:MAX_STOP_SEQUENCES]
    if len(sequences) > MAX_STOP_SEQUENCES:
        t.drop("stop_sequences")  # partly honoured is not honoured


def _is_custom_tool(tool: Mapping[str, Any]) -> bool:
    return (tool.get("type") in (None, "custom") and isinstance(tool.get("name"), str)
            and isinstance(tool.get("input_schema"), Mapping))


def _declaration(tool: Mapping[str, Any], t: _Translation) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool["name"]}
    if isinstance(tool.get("description"), str) and tool["description"]:
        declaration["description"] = tool["description"]
    parameters = reduce_schema(tool["input_schema"], where="input_schema", drop=t.drop)
    # Gemini refuses an OBJECT without properties here: a tool without parameters declares none.
    if parameters.get("properties") or parameters.get("type") not in (None, "OBJECT"):
        declaration["parameters"] = parameters
    return declaration


def _tools(body: Mapping[str, Any], request: dict[str, Any], t: _Translation) -> None:
    tools = [tool for tool in body.get("tools") or () if isinstance(tool, Mapping)]
    if any(not _is_custom_tool(tool) for tool in tools):
        t.drop("server_tools")
    custom = [tool for tool in tools if _is_custom_tool(tool)]
    if custom and not t.supports("tools"):
        t.drop("tools")
        custom = []
    declarations = [_declaration(tool, t) for tool in custom]
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
    choice = body.get("tool_choice")
    if not isinstance(choice, Mapping):
        return
    kind = choice.get("type")
    names = [d["name"] for d in declarations]
    if kind == "auto" or (kind == "none" and not declarations):
        config = None  # the API's default already, or nothing to refrain from
    elif not declarations or not t.supports("tool_choice"):
        t.drop("tool_choice")
        config = None
    elif kind == "any":
        config = {"mode": "ANY"}
    elif kind == "none":
        config = {"mode": "NONE"}
    elif kind == "tool" and choice.get("name") in names:
        config = {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}
    else:
        t.drop("tool_choice")
        config = None
    if config is not None:
        request["toolConfig"] = {"functionCallingConfig": config}
    if choice.get("disable_parallel_tool_use") and declarations and kind != "none":
        t.drop("parallel_tool_calls")


def _thinking(body: Mapping[str, Any], config: dict[str, Any], t: _Translation) -> None:
    if isinstance(mapping_at(body, "output_config").get("effort"), str):
        t.drop("effort")
    thinking = mapping_at(body, "thinking")
    kind = thinking.get("type")
    if kind is None:
        return
    if not t.supports("thinking"):
        if kind != "disabled":
            t.drop("thinking")
        return
    options = t.options
    if kind == "disabled":
        if options.can_disable_thinking:
            config["thinkingConfig"] = ({"thinkingBudget": 0} if options.thinking == "budget"
                                        else {"thinkingLevel": options.thinking_levels[0]})
        return
    budget = thinking.get("budget_tokens")
    budget = budget if isinstance(budget, int) and not isinstance(budget, bool) else None
    thinking_config: dict[str, Any] = {"includeThoughts": True}
    if options.thinking == "budget":
        thinking_config["thinkingBudget"] = budget if budget is not None else -1  # -1: the model decides
    elif budget is not None:
        level = effort_for_budget(budget)
        thinking_config["thinkingLevel"] = level if level in options.thinking_levels else options.thinking_levels[-1]
    config["thinkingConfig"] = thinking_config


def _output_format(body: Mapping[str, Any], config: dict[str, Any], t: _Translation) -> None:
    output_config = mapping_at(body, "output_config")
    for name in output_config:
        if name not in ("effort", "format"):
            t.drop(f"output_config.{name}")
    fmt = output_config.get("format") or body.get("output_format")
    if not isinstance(fmt, Mapping):
        return
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), Mapping) \
            or not t.supports("output_format"):
        t.drop("output_format")
        return
    config["responseMimeType"] = "application/json"
    config["responseSchema"] = reduce_schema(fmt["schema"], where="output_format", drop=t.drop)


# -- contents ----------------------------------------------------------------------------------------

def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())
    return [b for b in blocks if isinstance(b, Mapping)]


def _contents(body: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    messages = [m for m in list_at(body, "messages") if isinstance(m, Mapping)]
    for message in messages:  # tool_result names only an id; Gemini matches responses by function name
        if message.get("role") == "assistant":
            for block in _blocks(message):
                if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                    t.tool_names[block["id"]] = str(block.get("name", ""))
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "assistant":
            parts = _model_parts(_blocks(message), t)
            role = "model"
        else:
            parts = _user_parts(_blocks(message), t)
            role = "user"
        if parts:
            contents.append({"role": role, "parts": parts})
    return contents


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(b["text"] for b in system
                           if isinstance(b, Mapping) and b.get("type") == "text" and b.get("text"))
    return ""


def _user_parts(blocks: Iterable[Mapping[str, Any]], t: _Translation) -> list[dict[str, Any]]:
    """Function responses first, in the order of the calls they answer, then the rest of the turn."""
    responses: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            responses.extend(_function_response(block, t))
        else:
            parts.extend(_content_parts(block, t))
    return responses + parts


def _function_response(block: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    tool_id = str(block.get("tool_use_id", ""))
    content = block.get("content")
    inner = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for item in inner:
        if not isinstance(item, Mapping):
            continue
        for part in _content_parts(item, t):
            if "text" in part:
                texts.append(part["text"])
            else:
                attachments.append(part)
    # Google's convention: the function's result under "output", a failure under "error".
    response = {"error" if block.get("is_error") else "output": "\n\n".join(texts)}
    return [{"functionResponse": {"name": t.tool_names.get(tool_id) or tool_id, "response": response}},
            *attachments]


def _content_parts(block: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    """One user-side Anthropic block as Gemini parts ([] when it is dropped)."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return [{"text": text}] if isinstance(text, str) and text else []
    if kind == "image":
        return _media_part(block, "images", t)
    if kind == "document":
        return _document_parts(block, t)
    if kind in ("thinking", "redacted_thinking"):
        return []
    t.drop(str(kind))
    return []


def _url_media_type(url: str, default: str) -> str:
    name = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _MEDIA_BY_EXTENSION.get(extension, default)


def _media_part(block: Mapping[str, Any], capability: str, t: _Translation,
                default_type: str = "image/jpeg") -> list[dict[str, Any]]:
    source = mapping_at(block, "source")
    part: dict[str, Any] | None = None
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        part = {"inlineData": {"mimeType": str(source.get("media_type") or default_type), "data": source["data"]}}
    elif source.get("type") == "url" and isinstance(source.get("url"), str) and source["url"]:
        url = source["url"]
        part = {"fileData": {"mimeType": _url_media_type(url, default_type), "fileUri": url}}
    if part is None or not t.supports(capability):
        t.drop(capability)  # a Files API id means nothing to Google
        return []
    return [part]


def _document_parts(block: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    source = mapping_at(block, "source")
    title = block.get("title") if isinstance(block.get("title"), str) else ""
    kind = source.get("type")
    if kind == "text":
        text = str(source.get("data", ""))
        return [{"text": f"{title}\n\n{text}" if title else text}] if text else []
    if kind == "content":
        inner = source.get("content")
        blocks = [{"type": "text", "text": inner}] if isinstance(inner, str) else list(inner or ())
        return [p for b in blocks if isinstance(b, Mapping) for p in _content_parts(b, t)]
    if kind == "base64" and source.get("media_type") not in (None, "application/pdf"):
        t.drop("documents")
        return []
    return _media_part(block, "documents", t, default_type="application/pdf")


def _model_parts(blocks: Iterable[Mapping[str, Any]], t: _Translation) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    calls = 0
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            if isinstance(block.get("text"), str) and block["text"]:
                parts.append({"text": block["text"]})
        elif kind == "thinking":
            signature = signature_of_thinking(block.get("signature"))
            if signature is not None:  # thinking another model wrote means nothing to Gemini
                parts.append({"text": str(block.get("thinking", "")), "thought": True, "thoughtSignature": signature})
        elif kind == "tool_use":
            tool_id = str(block.get("id", ""))
            tool_input = block.get("input")
            part: dict[str, Any] = {"functionCall": {"name": str(block.get("name", "")),
                                                     "args": dict(tool_input) if isinstance(tool_input, Mapping) else {}}}
            signature = signature_in_tool_id(tool_id)
            if signature is None and calls == 0:
                signature = t.options.foreign_call_signature
            if signature:
                part["thoughtSignature"] = signature
            parts.append(part)
            calls += 1
        elif kind == "redacted_thinking":
            pass  # encrypted for Anthropic's models only
        elif kind == "server_tool_use" or str(kind).endswith("_tool_result"):
            t.drop("server_tools")
        else:
            t.drop(str(kind))
    return parts
