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

from providers.anthropic_input import (
    Drops,
    client_tools,
    document_blocks,
    is_server_tool_block,
    list_at,
    mapping_at,
    message_blocks,
    stop_sequences,
    system_text,
)
from providers.base import ROUTER_FIELDS
from providers.gemini_schema import reduce_schema
from providers.openai_chat_request import effort_for_budget, nearest_effort

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
_SAMPLING = {"temperature": "temperature", "top_p": "topP", "top_k": "topK"}
_OPTION_NAMES = ("thinking", "can_disable_thinking", "thinking_levels", "foreign_call_signature")
_TOOL_ID = re.compile(r"^toolu_[0-9a-f]{24}_ts_([A-Za-z0-9_-]+)$")
_TO_URLSAFE = str.maketrans("+/", "-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class GeminiOptions:
    """What one Gemini endpoint can honour.

    `thinking` says how Anthropic's `thinking` travels: "budget" (`thinkingConfig.thinkingBudget`,
    every thinking Gemini model) or "level" (`thinkingLevel`, Gemini 3's preferred form, from the
    budget by the bounds the chat translator uses, a level the model lacks becoming the nearest below it).
    `can_disable_thinking`: `thinking: disabled` sends
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
        if not self.thinking_levels:
            raise ValueError("thinking_levels must name at least one level")

    @classmethod
    def from_endpoint(cls, supported_parameters: Iterable[str], options: Mapping[str, Any], *,
                      require_parameters: bool = False) -> GeminiOptions:
        """The options of a catalog endpoint: its `supported_parameters` (catalog names: `output_config`
        stands for output_format) and its `options:` (thinking, can_disable_thinking, thinking_levels,
        foreign_call_signature). An unknown option is a ValueError naming it, for the catalog check."""
        supported = set(supported_parameters)
        if "output_config" in supported:
            supported.add("output_format")
        kwargs: dict[str, Any] = {"supported": frozenset(supported & DEFAULT_SUPPORTED),
                                  "require_parameters": require_parameters}
        for name, value in options.items():
            if name not in _OPTION_NAMES:
                raise ValueError(f"unknown option {name!r} for protocol gemini; known: {', '.join(_OPTION_NAMES)}")
            kwargs[name] = tuple(value) if name == "thinking_levels" else value
        return cls(**kwargs)


@dataclass
class _Translation(Drops):
    options: GeminiOptions = field(default_factory=GeminiOptions)
    tool_names: dict[str, str] = field(default_factory=dict)  # tool_use id → function name


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
    t = _Translation(options.supported, options.require_parameters, options=options)
    request: dict[str, Any] = {"contents": _contents(body, t)}
    system = system_text(body.get("system"))
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    if isinstance(body.get("max_tokens"), int):
        config["maxOutputTokens"] = body["max_tokens"]
    config.update((_SAMPLING[name], value) for name, value in t.honoured(body, _SAMPLING).items())
    config.update(_stop_sequences(body, t))
    request.update(_function_declarations(body, t))
    config.update(_thinking_config(body, t))
    config.update(_response_schema(body, t))
    if config:
        request["generationConfig"] = config
    t.unknown_fields(body, _HANDLED)
    return request, t.result()


def _stop_sequences(body: Mapping[str, Any], t: _Translation) -> dict[str, Any]:
    sequences = stop_sequences(body)
    if not sequences:
        return {}
    if not t.supports("stop_sequences") or len(sequences) > MAX_STOP_SEQUENCES:
        t.drop("stop_sequences")  # partly honoured is not honoured: reported, and the first five still sent
    return {"stopSequences": sequences[:MAX_STOP_SEQUENCES]} if t.supports("stop_sequences") else {}


def _declaration(tool: Mapping[str, Any], t: _Translation) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool["name"]}
    if isinstance(tool.get("description"), str) and tool["description"]:
        declaration["description"] = tool["description"]
    parameters = reduce_schema(tool["input_schema"], where="input_schema", drop=t.drop)
    # Gemini refuses an OBJECT without properties here: a tool without parameters declares none.
    if parameters.get("properties") or parameters.get("type") not in (None, "OBJECT"):
        declaration["parameters"] = parameters
    return declaration


def _function_declarations(body: Mapping[str, Any], t: _Translation) -> dict[str, Any]:
    """`tools` and `toolConfig` for the client's own tools (AUTO, Gemini's default, needs no toolConfig)."""
    custom = client_tools(body.get("tools") or (), t)
    declarations = [_declaration(tool, t) for tool in custom]
    members: dict[str, Any] = {"tools": [{"functionDeclarations": declarations}]} if declarations else {}
    choice = t.tool_choice(body, [d["name"] for d in declarations])
    if choice is not None:
        kind, name = choice
        calling: dict[str, Any] = {"mode": "NONE" if kind == "none" else "ANY"}
        if name is not None:
            calling["allowedFunctionNames"] = [name]
        members["toolConfig"] = {"functionCallingConfig": calling}
    return members


def _thinking_config(body: Mapping[str, Any], t: _Translation) -> dict[str, Any]:
    if isinstance(mapping_at(body, "output_config").get("effort"), str):
        t.drop("effort")
    thinking = mapping_at(body, "thinking")
    kind = thinking.get("type")
    options = t.options
    if kind is None or (kind == "disabled" and not (options.can_disable_thinking and t.supports("thinking"))):
        return {}  # a model that cannot stop thinking keeps its default
    if not t.supports("thinking"):
        t.drop("thinking")
        return {}
    if kind == "disabled":
        off = {"thinkingBudget": 0} if options.thinking == "budget" else {"thinkingLevel": options.thinking_levels[0]}
        return {"thinkingConfig": off}
    budget = thinking.get("budget_tokens")
    budget = budget if isinstance(budget, int) and not isinstance(budget, bool) else None
    config: dict[str, Any] = {"includeThoughts": True}
    if options.thinking == "budget":
        config["thinkingBudget"] = budget if budget is not None else -1  # -1: the model decides
    elif budget is not None:
        config["thinkingLevel"] = nearest_effort(effort_for_budget(budget), options.thinking_levels)
    return {"thinkingConfig": config}


def _response_schema(body: Mapping[str, Any], t: _Translation) -> dict[str, Any]:
    schema = t.output_schema(body)
    if schema is None:
        return {}
    return {"responseMimeType": "application/json",
            "responseSchema": reduce_schema(schema, where="output_format", drop=t.drop)}


# -- contents ----------------------------------------------------------------------------------------

def _contents(body: Mapping[str, Any], t: _Translation) -> list[dict[str, Any]]:
    messages = [m for m in list_at(body, "messages") if isinstance(m, Mapping)]
    for message in messages:  # tool_result names only an id; Gemini matches responses by function name
        if message.get("role") == "assistant":
            for block in message_blocks(message):
                if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                    t.tool_names[block["id"]] = str(block.get("name", ""))
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "assistant":
            parts = _model_parts(message_blocks(message), t)
            role = "model"
        else:
            parts = _user_parts(message_blocks(message), t)
            role = "user"
        if parts:
            contents.append({"role": role, "parts": parts})
    return contents


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
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for item in message_blocks(block):
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
    if kind in ("image", "document"):
        return _media_part(block, "images", t) if kind == "image" else _document_parts(block, t)
    if kind not in ("thinking", "redacted_thinking"):  # thinking in a user turn is nothing to send
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
    readable = document_blocks(block)
    if readable is not None:
        return [part for inner in readable for part in _content_parts(inner, t)]
    source = mapping_at(block, "source")
    if source.get("type") == "base64" and source.get("media_type") not in (None, "application/pdf"):
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
            parts.append(_function_call_part(block, first=calls == 0, t=t))
            calls += 1
        elif kind != "redacted_thinking":  # redacted thinking is encrypted for Anthropic's models only
            t.drop("server_tools" if is_server_tool_block(kind) else str(kind))
    return parts


def _function_call_part(block: Mapping[str, Any], *, first: bool, t: _Translation) -> dict[str, Any]:
    """A tool_use as a functionCall part, with the signature its id carries; the turn's first call
    without one gets the stand-in signature (the call came from another model)."""
    tool_input = block.get("input")
    part: dict[str, Any] = {"functionCall": {"name": str(block.get("name", "")),
                                             "args": dict(tool_input) if isinstance(tool_input, Mapping) else {}}}
    signature = signature_in_tool_id(str(block.get("id", "")))
    if signature is None and first:
        signature = t.options.foreign_call_signature
    if signature:
        part["thoughtSignature"] = signature
    return part
