"""Edits of top-level members of a JSON object held as bytes, without re-serialising it.

An Anthropic-protocol upstream must receive the client's bytes, with only `model` rewritten and the
router-only members removed; a response only gains `provider` and `usage.cost`. Re-serialising a
31 KB body would cost more than the rest of the request path together and could alter numbers or
key order, so the edits splice the original bytes.

A request's members are located exactly from what the decoder read: every top-level value as raw
bytes, in document order. Each member is checked in place, key then value, without copying: with
the usual separators when the body is laid out as SDKs write it, by a walk over any whitespace
otherwise. Either way the cost grows with the number of members, not with the body's size, and a
body the decoder read differently (duplicate keys) is refused rather than guessed at. A response, which the gateway
parses anyway, is edited with the help of the parsed object.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec
import orjson

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_SCALAR_END = re.compile(rb"[,}\]\s]")
_WS = b" \t\r\n"
_WS_BYTES = (b" ", b"\t", b"\r", b"\n")
_needles: dict[str, bytes] = {}
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])

_OPENING = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*(["}])')
_MEMBER_HEAD = re.compile(rb'[ \t\r\n]*("[^"\\]*(?:\\.[^"\\]*)*")[ \t\r\n]*:[ \t\r\n]*', re.S)
_AFTER_VALUE = re.compile(rb'[ \t\r\n]*([,}])')


class EditError(ValueError):
    """The bytes do not have the expected shape; the caller falls back to re-serialising."""


def _needle(key: str) -> bytes:
    needle = _needles.get(key)
    if needle is None:
        needle = orjson.dumps(key)
        if len(_needles) < 4096:  # member names come from clients: remember only so many
            _needles[key] = needle
    return needle


class _Layout:
    """A layout SDKs write objects in: what separates members, and key from value. Each member's
    key is remembered as it is written before its value, with the separator in front of it
    (b',"model":'), for the first member without (b'{"model":'), so that one comparison checks both."""
    __slots__ = ("between", "colon", "first_heads", "heads")

    def __init__(self, between: bytes, colon: bytes) -> None:
        self.between, self.colon = between, colon
        self.first_heads: dict[str, bytes] = {}
        self.heads: dict[str, bytes] = {}

    def head(self, key: str, first: bool) -> bytes:
        heads = self.first_heads if first else self.heads
        head = heads.get(key)
        if head is None:
            head = (b"{" if first else self.between) + _needle(key) + self.colon
            if len(heads) < 4096:  # member names come from clients: remember only so many
                heads[key] = head
        return head


# Compact (JSON.stringify), and Python's json.dumps.
_LAYOUTS = (_Layout(b",", b":"), _Layout(b", ", b": "))


def _member_keys(raw: bytes, key: str) -> Iterator[tuple[int, int]]:
    """(key start, value start) of every member named `key`, at any depth, in order."""
    needle = _needle(key)
    at = raw.find(needle)
    while at >= 0:
        start = _member_value_start(raw, at, len(needle))
        if start is not None:
            yield at, start
        at = raw.find(needle, at + 1)


def _depth_at(raw: bytes, pos: int) -> int:
    outside = _STRING.sub(b"", raw[:pos])
    return outside.count(b"{") + outside.count(b"[") - outside.count(b"}") - outside.count(b"]")


def _preceded_by_member_start(raw: bytes, pos: int) -> bool:
    i = pos - 1
    while i >= 0 and raw[i] in _WS:
        i -= 1
    return i >= 0 and raw[i] in b"{,"


def _value_end(raw: bytes, start: int) -> int:
    first = raw[start:start + 1]
    if first == b'"':
        m = _STRING.match(raw, start)
        if not m:
            raise EditError("unterminated string")
        return m.end()
    if first in (b"{", b"["):
        depth = 0
        for m in _TOKEN.finditer(raw, start):
            tok = m.group()
            if tok in (b"{", b"["):
                depth += 1
            elif tok in (b"}", b"]"):
                depth -= 1
                if depth == 0:
                    return m.end()
        raise EditError("unbalanced value")
    m = _SCALAR_END.search(raw, start)
    return m.start() if m else len(raw)


def member_span(raw: bytes, key: str, parsed: Mapping[str, Any] | None = None) -> tuple[int, int, int] | None:
    """(member start, value start, value end) of the top-level member `key`, or None.

    Finding out whether a key is at the top level means counting brackets up to it, which costs
    about a microsecond per 200 bytes. With the whole parsed object (`parsed`), the usual layouts
    are located directly instead (see `_span_from_parsed`)."""
    if parsed is not None:
        if key not in parsed:
            return None
        span = _span_from_parsed(raw, key, parsed)
        if span is not None:
            return span
    candidates = [(at, start) for at, start in _member_keys(raw, key) if _depth_at(raw, at) == 1]
    if not candidates:
        return None
    at, start = candidates[-1]  # with duplicate keys, JSON parsers keep the last
    return at, start, _value_end(raw, start)


def _span_from_parsed(raw: bytes, key: str, parsed: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """The member's span when it is the object's last member, or when only scalars precede it
    (an answer's `usage` and `model`); None when neither holds or the check below fails.

    The span found is checked against the parsed value: the bytes must decode to exactly that value.
    For the last member they must also end right at the object's closing brace, which a nested or
    an earlier duplicate member cannot do; with only scalars before it, the first key that starts a
    member is at the top level, and a later duplicate (which parsers prefer) fails the check."""
    if next(reversed(parsed)) == key:
        body = raw.rstrip(_WS)
        if not body.endswith(b"}"):
            return None
        needle = _needle(key)
        at = raw.rfind(needle)
        while at >= 0 and (start := _member_value_start(raw, at, len(needle))) is None:
            at = raw.rfind(needle, 0, at)
        if at < 0:
            return None
        end = len(body[:-1].rstrip(_WS))
    else:
        for name, other in parsed.items():
            if name == key:
                break
            if isinstance(other, (dict, list)):
                return None
        first = next(_member_keys(raw, key), None)
        if first is None:
            return None
        at, start = first
        try:
            end = _value_end(raw, start)
        except EditError:
            return None
    try:
        if orjson.loads(raw[start:end]) != parsed[key]:
            return None
    except orjson.JSONDecodeError:
        return None
    return at, start, end


def _member_value_start(raw: bytes, at: int, length: int) -> int | None:
    """Where the value starts when the string at `at` is a member's key; None when it is not."""
    i = at + length
    while raw[i:i + 1] in _WS_BYTES:
        i += 1
    if raw[i:i + 1] != b":" or not _preceded_by_member_start(raw, at):
        return None
    i += 1
    while raw[i:i + 1] in _WS_BYTES:
        i += 1
    return i


def _removal_spans(raw: bytes, members: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans to cut so that the members go and the commas left behind still separate the rest.

    Members separated only by whitespace and commas are cut as one run; a run then takes the comma
    after it, or, when it ends the object, the comma before it.
    """
    runs: list[list[int]] = []
    for start, end in sorted(members):
        if runs and not raw[runs[-1][1]:start].strip(b" \t\r\n,"):
            runs[-1][1] = end
        else:
            runs.append([start, end])
    spans = []
    for start, end in runs:
        j = end
        while j < len(raw) and raw[j] in _WS:
            j += 1
        if raw[j:j + 1] == b",":
            j += 1
            while j < len(raw) and raw[j] in _WS:
                j += 1
            spans.append((start, j))
            continue
        i = start - 1
        while i >= 0 and raw[i] in _WS:
            i -= 1
        spans.append((i, end) if raw[i:i + 1] == b"," else (start, end))
    return spans


def edit_members(raw: bytes, *, replace: Mapping[str, Any] | None = None, remove: Iterable[str] = (),
                 append: Mapping[str, Any] | None = None,
                 extend: Mapping[str, Mapping[str, Any]] | None = None,
                 parsed: Mapping[str, Any] | None = None) -> bytes:
    """Return `raw` with top-level members replaced, removed and appended, in one pass.

    `replace` only touches members that exist; `remove` ignores absent ones; `append` adds members
    before the closing brace (the caller makes sure they are new); `extend` adds members at the end
    of a top-level object member (e.g. `usage.cost`). `parsed`, the object `raw` decodes to, when the
    caller has it, makes locating members cheaper.
    """
    edits: list[tuple[int, int, bytes]] = []
    for key, members in (extend or {}).items():
        span = member_span(raw, key, parsed)
        if span is None or raw[span[1]:span[1] + 1] != b"{":
            raise EditError(f"no object member {key!r}")
        close = span[2] - 1
        sep = b"" if raw[span[1]:close].rstrip().endswith(b"{") else b","
        edits.append((close, close, sep + _members(members)))
    for key, value in (replace or {}).items():
        span = member_span(raw, key, parsed)
        if span is not None:
            edits.append((span[1], span[2], orjson.dumps(value)))
    removed = [(span[0], span[2]) for span in (member_span(raw, key, parsed) for key in remove)
               if span is not None]
    edits.extend((start, end, b"") for start, end in _removal_spans(raw, removed))
    if append:
        close = raw.rstrip().rfind(b"}")
        if close < 0:
            raise EditError("not a JSON object")
        inner = raw[:close].rstrip()
        sep = b"" if inner.endswith(b"{") else b","
        edits.append((close, close, sep + _members(append)))
    return _apply(raw, edits)


# -- requests: members located from the decoder's reading ----------------------------------------
def top_level_values(raw: bytes) -> dict[str, msgspec.Raw]:
    """Every top-level member of the JSON object `raw`, in document order, its value left as raw
    bytes: the decoder only steps over nested values, building no objects. Raises
    msgspec.ValidationError when `raw` is not an object, msgspec.DecodeError when not JSON."""
    return _TOP_LEVEL.decode(raw)


def edit_top_level(raw: bytes, values: Mapping[str, msgspec.Raw], *, replace: Mapping[str, Any] | None = None,
                   remove: Iterable[str] = (), spans: Mapping[str, tuple[int, int, int]] | None = None) -> bytes:
    """`raw` with top-level members replaced (only those present) and removed (absent ones are
    ignored); `values` is what `top_level_values` read from `raw`, `spans` what `top_level_spans`
    located from them when the caller has it. Raises EditError when `raw` holds more than the
    decoder kept (duplicate keys)."""
    if spans is None:
        spans = top_level_spans(raw, values)
    edits = [(spans[key][1], spans[key][2], orjson.dumps(value)) for key, value in (replace or {}).items()
             if key in spans]
    removed = [(spans[key][0], spans[key][2]) for key in remove if key in spans]
    edits.extend((start, end, b"") for start, end in _removal_spans(raw, removed))
    return _apply(raw, edits)


def top_level_spans(raw: bytes, values: Mapping[str, msgspec.Raw]) -> dict[str, tuple[int, int, int]]:
    """(member start, value start, value end) of every top-level member of `raw`, whose values the
    decoder read as `values` (in document order).

    Each member is checked where it should be: its key, then the value's bytes as the decoder read
    them, then a separator. A body laid out as SDKs write it is checked with fixed separators;
    any other layout is walked member by member. Either way the spans match the decoder's reading
    exactly or EditError is raised: a duplicate key, whose earlier value the decoder dropped,
    cannot be stepped over by a wrong length."""
    first = len(raw) - len(raw.lstrip(_WS))
    for layout in _LAYOUTS:
        spans = _spans_in_layout(raw, values, first, layout)
        if spans is not None:
            return spans
    return _walk_spans(raw, values)


def _spans_in_layout(raw: bytes, values: Mapping[str, msgspec.Raw], at: int,
                     layout: _Layout) -> dict[str, tuple[int, int, int]] | None:
    startswith = raw.startswith
    spans = {}
    # Each member is checked by its head (the brace or separator before it included), then its value.
    heads, lead = layout.first_heads, 1
    for key, value in values.items():
        head = heads.get(key) or layout.head(key, first=not spans)
        start = at + len(head)
        if not (startswith(head, at) and startswith(value, start)):
            return None
        end = start + len(value)
        spans[key] = (at + lead, start, end)
        at = end
        heads, lead = layout.heads, len(layout.between)
    if not spans:
        if raw[at:at + 1] != b"{":
            return None
        at += 1
    if raw[at:at + 1] != b"}" or raw[at + 1:].strip(_WS):
        return None
    return spans


def _walk_spans(raw: bytes, values: Mapping[str, msgspec.Raw]) -> dict[str, tuple[int, int, int]]:
    spans: dict[str, tuple[int, int, int]] = {}
    opening = _OPENING.match(raw)
    if opening is None:
        raise EditError("not a JSON object")
    i = opening.start(1)
    while opening.group(1) != b"}":
        head = _MEMBER_HEAD.match(raw, i)
        if head is None:
            raise EditError("expected a member name")
        name = head.group(1)
        key = orjson.loads(name) if b"\\" in name else name[1:-1].decode()
        value = values.get(key)
        if value is None or key in spans:
            raise EditError(f"member {key!r} is not the one the decoder kept")
        start = head.end()
        if not raw.startswith(value, start):
            raise EditError(f"member {key!r} is not where the decoder read it")
        end = start + len(value)
        spans[key] = (head.start(1), start, end)
        after = _AFTER_VALUE.match(raw, end)
        if after is None:
            raise EditError("expected ',' or '}'")
        if after.group(1) == b"}":
            break
        i = after.end()
    if len(spans) != len(values):
        raise EditError("the decoder read other members")
    return spans


def _apply(raw: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """`raw` with each (start, end) span replaced (the spans do not overlap), in one copy."""
    if not edits:
        return raw
    edits.sort(key=lambda e: (e[0], e[1]))
    view = memoryview(raw)
    parts: list[Any] = []
    at = 0
    for start, end, replacement in edits:
        parts += (view[at:start], replacement)
        at = end
    parts.append(view[at:])
    return b"".join(parts)


def _members(members: Mapping[str, Any]) -> bytes:
    return b",".join(orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in members.items())


def label_answer(raw: bytes, parsed: Mapping[str, Any], *, model: str, provider: str, cost: float | None) -> bytes:
    """An upstream's JSON answer (`parsed` is its object) with the router's `model`, `provider` and
    `usage.cost`, the rest as its bytes."""
    usual = _label_usual_answer(raw, parsed, model, provider, cost)
    if usual is not None:
        return usual
    spanned = _label_by_spans(raw, parsed, model, provider, cost)
    if spanned is not None:
        return spanned
    try:
        usage_cost = {"cost": cost} if cost is not None and isinstance(parsed.get("usage"), dict) else None
        return edit_members(raw, replace={"model": model},
                            append=None if "provider" in parsed else {"provider": provider},
                            extend={"usage": usage_cost} if usage_cost else None, parsed=parsed)
    except EditError:
        message = dict(parsed)
        message["model"], message["provider"] = model, provider
        if cost is not None and isinstance(message.get("usage"), dict):
            message["usage"] = {**message["usage"], "cost": cost}
        return orjson.dumps(message)


def _label_by_spans(raw: bytes, parsed: Mapping[str, Any], model: str, provider: str,
                    cost: float | None) -> bytes | None:
    """Any layout the request side reads (`top_level_spans`), located from one decode of the top
    level (an OpenAI answer's `usage` is not last); None where that cannot locate the members
    (duplicate keys)."""
    try:
        spans = top_level_spans(raw, top_level_values(raw))
    except (EditError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    edits: list[tuple[int, int, bytes]] = []
    if "model" in spans:
        edits.append((spans["model"][1], spans["model"][2], orjson.dumps(model)))
    usage = spans.get("usage")
    if usage is not None and cost is not None and isinstance(parsed.get("usage"), dict):
        close = usage[2] - 1  # the object's closing brace
        empty = raw[usage[1]:close].rstrip(_WS).endswith(b"{")
        edits.append((close, close, (b"" if empty else b",") + b'"cost":' + orjson.dumps(cost)))
    if "provider" not in parsed:
        close = len(raw.rstrip(_WS)) - 1
        edits.append((close, close, (b"," if spans else b"") + b'"provider":' + orjson.dumps(provider)))
    return _apply(raw, edits)


def _label_usual_answer(raw: bytes, parsed: Mapping[str, Any], model: str, provider: str,
                         cost: float | None) -> bytes | None:
    """The layout Anthropic's answers have (`model` among the leading scalars, `usage` last, no
    `provider`), spliced in one join; None for any other layout."""
    if cost is None or "provider" in parsed or next(reversed(parsed), None) != "usage" \
            or not isinstance(parsed["usage"], dict):
        return None
    model_span = member_span(raw, "model", parsed)
    usage_span = member_span(raw, "usage", parsed)
    if model_span is None or usage_span is None or model_span[2] > usage_span[0]:
        return None
    usage_close = usage_span[2] - 1
    object_close = len(raw.rstrip(b" \t\r\n")) - 1
    if raw[usage_close] != 0x7D or raw[object_close] != 0x7D:
        return None
    return b"".join((raw[:model_span[1]], orjson.dumps(model), raw[model_span[2]:usage_close],
                     b',"cost":' if parsed["usage"] else b'"cost":', orjson.dumps(cost),
                     raw[usage_close:object_close], b',"provider":', orjson.dumps(provider), raw[object_close:]))
