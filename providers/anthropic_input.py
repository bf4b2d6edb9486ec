"""Reading an Anthropic Messages request the same way in every translating protocol: the system text,
a message's blocks, which tools are the client's own, the stop sequences asked for, and the record
of what a translation could not honour (reported, or refused under `require_parameters`).

Inputs are read, never trusted: a member of the wrong JSON type counts as absent (`mapping_at`,
`list_at`, which the translators read their upstreams' answers with too).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class UnsupportedParameters(ValueError):
    """The request uses parameters the endpoint cannot honour, and the client required them all."""

    def __init__(self, parameters: Sequence[str]) -> None:
        self.parameters = tuple(parameters)
        super().__init__("the endpoint cannot honour: " + ", ".join(self.parameters))


def mapping_at(container: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """container[key] when it is a JSON object, else {}: inputs are read, never trusted."""
    value = container.get(key)
    return value if isinstance(value, Mapping) else {}


def list_at(container: Mapping[str, Any], key: str) -> list[Any]:
    """container[key] when it is a JSON array, else []."""
    value = container.get(key)
    return value if isinstance(value, list) else []


def system_text(system: Any) -> str:
    """`system` as one text: a string as is, text blocks joined by blank lines (their cache_control lost)."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        return ""
    return "\n\n".join(block["text"] for block in system if isinstance(block, Mapping)
                       and block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"])


def message_blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A message's content as blocks: a string content is one text block."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content or () if isinstance(block, Mapping)] if isinstance(content, list) else []


def is_custom_tool(tool: Mapping[str, Any]) -> bool:
    """A tool the client defines and runs itself (not an Anthropic-defined or server tool)."""
    return (tool.get("type") in (None, "custom") and isinstance(tool.get("name"), str)
            and isinstance(tool.get("input_schema"), Mapping))


def client_tools(tools: Iterable[Any], drops: Drops) -> list[Mapping[str, Any]]:
    """The client's own tools among `tools` (the body's, as the caller reads them), or none where
    the endpoint takes no tools; the others are reported as server_tools, having no function form."""
    tools = [tool for tool in tools if isinstance(tool, Mapping)]
    if any(not is_custom_tool(tool) for tool in tools):
        drops.drop("server_tools")
    custom = [tool for tool in tools if is_custom_tool(tool)]
    if custom and not drops.supports("tools"):
        drops.drop("tools")
        return []
    return custom


def is_server_tool_block(kind: Any) -> bool:
    """A content block of a server tool's call or result (web search, code execution...)."""
    return kind == "server_tool_use" or str(kind).endswith("_tool_result")


def stop_sequences(body: Mapping[str, Any]) -> list[str]:
    sequences = body.get("stop_sequences")
    return [s for s in sequences if isinstance(s, str) and s] if isinstance(sequences, list) else []


@dataclass
class Drops:
    """What one translation could not honour, in the order found, given what the endpoint supports."""
    supported: frozenset[str]
    require_parameters: bool = False
    names: dict[str, None] = field(default_factory=dict)  # insertion-ordered set

    def drop(self, name: str) -> None:
        self.names[name] = None

    def supports(self, name: str) -> bool:
        return name in self.supported

    def unknown_fields(self, body: Mapping[str, Any], handled: Iterable[str]) -> None:
        """Report every top-level member the translator does not read (`service_tier: auto` asks for nothing)."""
        known = set(handled)
        for name, value in body.items():
            if name not in known and (name, value) != ("service_tier", "auto"):
                self.drop(name)

    def result(self) -> list[str]:
        """The dropped names; UnsupportedParameters instead when the client required every parameter."""
        if self.names and self.require_parameters:
            raise UnsupportedParameters(list(self.names))
        return list(self.names)

    def honoured(self, body: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """The members among `names` that `body` sets and the endpoint supports; the others are dropped."""
        kept: dict[str, Any] = {}
        for name in names:
            if body.get(name) is None:
                continue
            if self.supports(name):
                kept[name] = body[name]
            else:
                self.drop(name)
        return kept

    def tool_choice(self, body: Mapping[str, Any], tool_names: Iterable[str]) -> tuple[str, str | None] | None:
        """What `tool_choice` asks of the tools sent (`tool_names`): ("any", None), ("none", None) or
        ("tool", name); None when it asks nothing beyond the default (auto, or none without tools).
        A choice that cannot be honoured is dropped; so is `disable_parallel_tool_use` when the endpoint
        lacks `parallel_tool_calls` (the caller honours it where supported)."""
        choice = body.get("tool_choice")
        if not isinstance(choice, Mapping):
            return None
        names = set(tool_names)
        kind = choice.get("type")
        if choice.get("disable_parallel_tool_use") and names and kind != "none" \
                and not self.supports("parallel_tool_calls"):
            self.drop("parallel_tool_calls")
        if kind == "auto" or (kind == "none" and not names):
            return None
        if names and self.supports("tool_choice"):
            if kind in ("any", "none"):
                return kind, None
            if kind == "tool" and choice.get("name") in names:
                return "tool", choice["name"]
        self.drop("tool_choice")
        return None

    def output_schema(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The JSON Schema the answer must follow (`output_config.format`, or the older `output_format`),
        else None; other `output_config` members, and formats that cannot be honoured, are dropped."""
        output_config = body.get("output_config") if isinstance(body.get("output_config"), Mapping) else {}
        for name in output_config:
            if name not in ("effort", "format"):
                self.drop(f"output_config.{name}")
        fmt = output_config.get("format") or body.get("output_format")
        if not isinstance(fmt, Mapping):
            return None
        schema = fmt.get("schema")
        if fmt.get("type") != "json_schema" or not isinstance(schema, Mapping) or not self.supports("output_format"):
            self.drop("output_format")
            return None
        return schema


def document_blocks(block: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """A document whose source is text (title on the first line) or content blocks, as blocks to read
    like the user's own; None for a document of another kind (PDF, URL, file)."""
    source = block.get("source") if isinstance(block.get("source"), Mapping) else {}
    kind = source.get("type")
    if kind == "text":
        title = block.get("title") if isinstance(block.get("title"), str) else ""
        text = str(source.get("data", ""))
        return [{"type": "text", "text": f"{title}\n\n{text}" if title and text else text}]
    if kind == "content":
        return message_blocks({"content": source.get("content")})
    return None
