"""Anthropic turns and user-side content blocks → the content parts of OpenAI's chat completions and
Responses APIs.

Both APIs read a turn the same way: text, images and documents become parts, thinking never travels
back in a user turn, a document of text or content blocks reads like the user's own text, and any
other block is dropped by its type. They differ only in the shapes of the parts they take, which each
API's request module gives as `PartShapes`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from providers.anthropic_input import Drops, is_server_tool_block, mapping_at


@dataclass(frozen=True)
class PartShapes:
    """The content parts one API takes. `text` names the type of a text part (its text is under
    "text"); `image` makes a part from the image's URL (a data URL for base64); `pdf` from a filename
    and the PDF's data URL; `document_url` from a document's URL, None where the API fetches none."""
    text: str
    image: Callable[[str], dict[str, Any]]
    pdf: Callable[[str, str], dict[str, Any]]
    document_url: Callable[[str], dict[str, Any]] | None = None

    def text_part(self, text: str) -> dict[str, Any]:
        return {"type": self.text, "text": text}


def as_blocks(content: Any) -> list[Any]:
    """Content as blocks, a string being one text block; the caller skips what is not an object."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())


def turns(messages: Iterable[Any]) -> Iterator[tuple[bool, list[Mapping[str, Any]]]]:
    """(is the assistant's, its blocks) for each message that is an object, in order."""
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        blocks = [b for b in as_blocks(message.get("content")) if isinstance(b, Mapping)]
        yield message.get("role") == "assistant", blocks


def content_parts(block: Mapping[str, Any], t: Drops, shapes: PartShapes) -> list[dict[str, Any]]:
    """One user-side Anthropic block as content parts ([] when it is dropped)."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return [shapes.text_part(text)] if isinstance(text, str) and text else []
    if kind == "image":
        return _image_part(block, t, shapes)
    if kind == "document":
        return _document_parts(block, t, shapes)
    if kind in ("thinking", "redacted_thinking"):
        return []
    t.drop(str(kind))
    return []


def inner_parts(content: Any, t: Drops, shapes: PartShapes) -> list[dict[str, Any]]:
    """The parts of blocks nested in a block (a tool result's content, a document's)."""
    return [p for b in as_blocks(content) if isinstance(b, Mapping) for p in content_parts(b, t, shapes)]


def image_source_url(block: Mapping[str, Any]) -> str:
    """An Anthropic image block's source as the URL OpenAI's APIs take: a data URL for base64, the
    URL itself, or "" for a Files API id (which means nothing to another provider)."""
    source = mapping_at(block, "source")
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", ""))
    return ""


def _image_part(block: Mapping[str, Any], t: Drops, shapes: PartShapes) -> list[dict[str, Any]]:
    url = image_source_url(block)
    if not url or not t.supports("images"):
        t.drop("images")
        return []
    return [shapes.image(url)]


def _document_parts(block: Mapping[str, Any], t: Drops, shapes: PartShapes) -> list[dict[str, Any]]:
    source = mapping_at(block, "source")
    title = block.get("title") if isinstance(block.get("title"), str) else ""
    kind = source.get("type")
    if kind == "text":
        text = str(source.get("data", ""))
        return [shapes.text_part(f"{title}\n\n{text}" if title else text)] if text else []
    if kind == "content":
        return inner_parts(source.get("content"), t, shapes)
    if not t.supports("documents"):
        t.drop("documents")
        return []
    if kind == "base64" and source.get("media_type") == "application/pdf":
        return [shapes.pdf(title or "document.pdf", f"data:application/pdf;base64,{source.get('data', '')}")]
    if kind == "url" and shapes.document_url is not None and isinstance(source.get("url"), str) and source["url"]:
        return [shapes.document_url(source["url"])]
    t.drop("documents")  # a Files API id, a URL the API would not fetch, or a media type with no part
    return []


def drop_unsent_assistant_block(kind: Any, t: Drops) -> None:
    """Report an assistant block neither API carries back: redacted thinking is encrypted for
    Anthropic's models only (nothing to report), a server tool's call or result counts as
    server_tools, anything else by its type."""
    if kind == "redacted_thinking":
        return
    t.drop("server_tools" if is_server_tool_block(kind) else str(kind))


def image_source_for_url(url: str) -> dict[str, str]:
    """The Anthropic image source for a URL OpenAI's APIs took: base64 for a data URL, else the URL."""
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type or "image/png", "data": data}
    return {"type": "url", "url": url}
