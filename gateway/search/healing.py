"""Response healing: a JSON answer to a request for structured output, repaired when the model
wrapped or bent it. Pure functions; used for JSON answers only (a stream has gone out already).

What is repaired: markdown code fences, prose before or after the JSON, trailing commas, strings
and keys in single quotes where the quote cannot mean anything else (it opens where a value or a
key must start, and closes right before `,` `:` `}` `]` or the end), Python's `True`/`False`/`None`.
Anything still not JSON is left as it was: healing never invents content.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL)
_LITERALS = {"True": "true", "False": "false", "None": "null"}
_CLOSERS = ",:}]"


def wants_json(body: Mapping[str, Any]) -> bool:
    """Whether the request asked for structured output (`output_config.format` or `output_format`)."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    fmt = fmt or body.get("output_format")
    return isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object", "json")


def _parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _extract(text: str) -> str:
    """From the first `{` or `[` to the bracket that closes it (strings of either quote respected),
    or to the end when it never closes."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return text
    start = min(starts)
    depth, quote, i = 0, None, start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch == '"' or (ch == "'" and _single_quote_opens(text, i)):
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
        i += 1
    return text[start:]


def _previous_significant(text: str, i: int) -> str:
    j = i - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    return text[j] if j >= 0 else ""


def _single_quote_opens(text: str, i: int) -> bool:
    return _previous_significant(text, i) in ("", "{", "[", ",", ":")


def _single_quote_closes(text: str, i: int) -> bool:
    j = i + 1
    while j < len(text) and text[j].isspace():
        j += 1
    return j == len(text) or text[j] in _CLOSERS


def _normalise(text: str) -> str:
    """One pass outside strings: single-quoted strings requoted, trailing commas dropped, Python
    literals made JSON."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif ch == "'" and _single_quote_opens(text, i):
            j, chars = i + 1, []
            while j < n and not (text[j] == "'" and _single_quote_closes(text, j)):
                if text[j] == "\\" and j + 1 < n:
                    chars.append(text[j + 1] if text[j + 1] == "'" else text[j:j + 2])
                    j += 2
                    continue
                chars.append('\\"' if text[j] == '"' else text[j])
                j += 1
            out.append('"' + "".join(chars) + '"')
            i = j + 1
        elif ch == ",":
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] in "}]":
                i += 1  # a trailing comma
                continue
            out.append(ch)
            i += 1
        elif ch.isalpha():
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            out.append(_LITERALS.get(word, word))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def heal_json(text: str) -> str | None:
    """`text` when it is JSON already; else the repaired JSON (compact), or None when it cannot be."""
    if _parses(text):
        return text
    candidates = []
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(fenced.group(1))
    candidates.append(text)
    for candidate in candidates:
        for attempt in (candidate.strip(), _extract(candidate)):
            for repaired in (attempt, _normalise(attempt)):
                try:
                    return orjson.dumps(orjson.loads(repaired)).decode()
                except orjson.JSONDecodeError:
                    continue
    return None


def heal_message(message: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The answer with its text repaired into one JSON text block, and whether anything changed.
    An answer that is JSON already, or that cannot be repaired, comes back as it was."""
    content = [b for b in message.get("content") or [] if isinstance(b, Mapping)]
    texts = [b for b in content if b.get("type") == "text"]
    if not texts:
        return dict(message), False
    joined = "".join(str(b.get("text") or "") for b in texts)
    healed = heal_json(joined)
    if healed is None or (healed == joined and len(texts) == 1):
        return dict(message), False
    out, placed = [], False
    for block in content:
        if block.get("type") != "text":
            out.append(dict(block))
        elif not placed:
            out.append({"type": "text", "text": healed})
            placed = True
    return {**message, "content": out}, True
