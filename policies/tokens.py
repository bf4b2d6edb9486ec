"""A local, offline estimate of an Anthropic Messages request's input tokens.

count_tokens uses it when no Anthropic-protocol endpoint serves the model (Anthropic endpoints
count exactly upstream). Tokenizer packages that download vocabularies at run time do not work
offline, so this is a documented estimate, deliberately rounded up rather than down:

- Text: ASCII characters / the model's tokenizer ratio (`CHARS_PER_TOKEN`, characters per token
  for English and code), rounded up, plus one token per non-ASCII character (CJK text runs at
  roughly one token per character; accented Latin text is overcounted a little).
- Every message costs `MESSAGE_OVERHEAD` tokens for its role markers, the system prompt one more
  message's worth, the request `REQUEST_OVERHEAD` for the reply's priming.
- Images cost a fixed `IMAGE_TOKENS` (Anthropic's documented cost of a full-size 1.15-megapixel
  image, width x height / 750); the pixels are not decoded.
- PDF documents cost `PDF_PAGE_TOKENS` per page (Anthropic documents 1,500-3,000 per page),
  pages counted from the PDF's page objects (one page when they are compressed out of sight);
  a PDF given by URL or file id counts as one page.
  Plain-text and content documents count as their text.
- tool_use / server_tool_use count their name and JSON input; tool_result, search_result and
  document contents count block by block; thinking counts its text. Any other block type counts
  as its JSON (without `type` and `cache_control`).
- Tools: each tool's name, description and JSON schema (or, for server tools, its JSON) plus
  `TOOL_OVERHEAD`, and once per request `TOOL_SYSTEM_TOKENS` for the tool-use instructions the
  upstream adds (Anthropic documents 346 for Claude 4 models with tool_choice auto).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from policies.catalog import Model

CHARS_PER_TOKEN: Mapping[str, float] = {
    "claude": 3.5,
    "o200k": 4.0,     # OpenAI's o200k_base
    "gemini": 4.0,
    "kimi": 3.6,
    "minimax": 3.6,
    "qwen": 3.6,
}
DEFAULT_CHARS_PER_TOKEN = 3.5
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3
IMAGE_TOKENS = 1_600
PDF_PAGE_TOKENS = 2_000
TOOL_OVERHEAD = 8
TOOL_SYSTEM_TOKENS = 346

_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_IGNORED_KEYS = frozenset({"type", "cache_control"})


def chars_per_token(tokenizer: str) -> float:
    """Characters per token of a model's tokenizer, for the estimates here."""
    return CHARS_PER_TOKEN.get(tokenizer, DEFAULT_CHARS_PER_TOKEN)


def estimate_input_tokens(body: Mapping[str, Any], model: Model) -> int:
    """Estimated input tokens of a Messages request body for `model` (see module docstring)."""
    counter = _Counter(CHARS_PER_TOKEN.get(model.tokenizer, DEFAULT_CHARS_PER_TOKEN))
    system = body.get("system")
    if system:
        counter.tokens += MESSAGE_OVERHEAD
        counter.content(system)
    for message in body.get("messages") or ():
        counter.tokens += MESSAGE_OVERHEAD
        if isinstance(message, Mapping):
            counter.content(message.get("content"))
    tools = body.get("tools") or ()
    if tools:
        counter.tokens += TOOL_SYSTEM_TOKENS
    for tool in tools:
        counter.tokens += TOOL_OVERHEAD
        counter.tool(tool)
    return counter.tokens + REQUEST_OVERHEAD


def text_tokens(text: str, chars_per_token: float) -> int:
    """Tokens of one piece of text by the module's rule."""
    if not text:
        return 0
    if text.isascii():
        return math.ceil(len(text) / chars_per_token)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / chars_per_token) + (len(text) - ascii_chars)


class _Counter:
    def __init__(self, chars_per_token: float) -> None:
        self.ratio = chars_per_token
        self.tokens = 0

    def text(self, text: Any) -> None:
        if isinstance(text, str):
            self.tokens += text_tokens(text, self.ratio)

    def json(self, value: Any) -> None:
        self.text(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))

    def content(self, content: Any) -> None:
        if isinstance(content, str):
            self.text(content)
        elif isinstance(content, list):
            for block in content:
                self.block(block)

    def block(self, block: Any) -> None:
        if isinstance(block, str):
            self.text(block)
            return
        if not isinstance(block, Mapping):
            return
        kind = block.get("type")
        if kind == "text":
            self.text(block.get("text"))
        elif kind == "image":
            self.tokens += IMAGE_TOKENS
        elif kind == "document":
            self.document(block)
        elif kind in ("tool_use", "server_tool_use"):
            self.text(block.get("name"))
            self.json(block.get("input", {}))
        elif kind == "tool_result":
            self.content(block.get("content"))
        elif kind == "search_result":
            self.text(block.get("title"))
            self.text(block.get("source"))
            self.content(block.get("content"))
        elif kind == "thinking":
            self.text(block.get("thinking"))
        elif kind == "redacted_thinking":
            self.text(block.get("data"))
        else:
            self.json({k: v for k, v in block.items() if k not in _IGNORED_KEYS})

    def document(self, block: Mapping[str, Any]) -> None:
        self.text(block.get("title"))
        self.text(block.get("context"))
        source = block.get("source")
        if not isinstance(source, Mapping):
            return
        kind = source.get("type")
        if kind == "text":
            self.text(source.get("data"))
        elif kind == "content":
            self.content(source.get("content"))
        elif kind == "base64":
            self.tokens += PDF_PAGE_TOKENS * _pdf_pages(source.get("data"))
        else:  # url or file: the pages cannot be seen from here
            self.tokens += PDF_PAGE_TOKENS

    def tool(self, tool: Any) -> None:
        if not isinstance(tool, Mapping):
            return
        if "input_schema" in tool:
            self.text(tool.get("name"))
            self.text(tool.get("description"))
            self.json(tool.get("input_schema"))
        else:  # a server tool such as web search: its settings are all there is
            self.json({k: v for k, v in tool.items() if k not in _IGNORED_KEYS})


def _pdf_pages(data: Any) -> int:
    if not isinstance(data, str):
        return 1
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return 1
    return max(1, len(_PAGE_OBJECT.findall(raw)))


class TextTally:
    """Text seen piece by piece (a stream's deltas), counted as `text_tokens` counts it whole:
    the same estimate as everywhere else, with no rounding per piece."""

    __slots__ = ("ascii_chars", "other_chars")

    def __init__(self) -> None:
        self.ascii_chars = 0
        self.other_chars = 0

    def add(self, text: str) -> None:
        if text.isascii():
            self.ascii_chars += len(text)
        else:
            ascii_chars = len(text.encode("ascii", "ignore"))
            self.ascii_chars += ascii_chars
            self.other_chars += len(text) - ascii_chars

    def tokens(self, chars_per_token: float) -> int:
        return math.ceil(self.ascii_chars / chars_per_token) + self.other_chars

