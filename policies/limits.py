"""Limit arithmetic: windows, UTC budget periods, money units and the worst-case reservation.

Pure functions of numbers, shared by both store backends (the Redis scripts repeat the few formulas
they need and say so) and by the service when it prices a reservation. No clock is read here: every
function takes the time it reasons about.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

WINDOW_S = 60.0          # RPM and TPM are sliding windows of this length
LEASE_TTL_S = 30.0       # a concurrency slot lives this long unless renewed
LEASE_RENEW_S = 10.0     # how often an open stream renews its slot
ABANDONED_KEEP_S = 40 * 86400  # how long a lease that expired unsettled is kept on record
CONCURRENCY_RETRY_S = 1.0  # a slot frees when some request ends: no better hint exists
NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # catalog prices are USD per million tokens


def usd_to_nanos(usd: float) -> int:
    """Money is counted in integer nano-dollars so that 100 x $0.01 is exactly $1.00.

    The same formula (floor(x * 1e9 + 0.5)) runs inside the Redis scripts: keep them equal.
    """
    return math.floor(usd * 1e9 + 0.5)


def nanos_to_usd(nanos: int) -> float:
    return round(nanos / NANOS_PER_USD, 9)


def stricter(a: float | None, b: float | None) -> int | float | None:
    """The tighter of two optional limits; None means unlimited."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def allowed_intersection(
    a: tuple[str, ...] | None, b: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """Models allowed by both lists; None means any model."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(m for m in a if m in set(b))


# -- UTC periods ------------------------------------------------------------------------------
def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


# Every admission and settlement names its day and month: computed once per UTC day, not per call.
@functools.lru_cache(maxsize=64)
def _day_facts(day: int) -> tuple[str, str, float]:
    """(day id, month id, start of the next month) of the UTC day number `day`."""
    d = _utc(day * 86400)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return d.strftime("%Y%m%d"), d.strftime("%Y%m"), datetime(year, month, 1, tzinfo=UTC).timestamp()


def day_id(now: float) -> str:
    """The UTC day a daily budget counts in, e.g. '20250131'."""
    return _day_facts(int(now // 86400))[0]


def month_id(now: float) -> str:
    """The UTC month a monthly budget counts in, e.g. '202501'."""
    return _day_facts(int(now // 86400))[1]


def next_day_start(now: float) -> float:
    return float(day_start(now) + 86400)


def next_month_start(now: float) -> float:
    return _day_facts(int(now // 86400))[2]


def hour_start(ts: float) -> int:
    return int(ts // 3600) * 3600


def day_start(ts: float) -> int:
    return int(ts // 86400) * 86400


# -- budget reservation ---------------------------------------------------------------------
def _rates(table: Any, cache_write: bool) -> tuple[float, float]:
    """(input, output) USD per million tokens of one price table, input at the dearest of its
    cache-write prices when `cache_write`; an unknown price counts as 0. The table's kind is told
    once, not once per price: that check was the dearest step of a reservation."""
    if isinstance(table, Mapping):
        input_price, output_price = table.get("input"), table.get("output")
        writes = (table.get("cache_write"), table.get("cache_write_1h")) if cache_write else ()
    else:
        input_price, output_price = getattr(table, "input", None), getattr(table, "output", None)
        writes = (getattr(table, "cache_write", None), getattr(table, "cache_write_1h", None)) if cache_write else ()
    input_usd = _usd_or_zero(input_price)
    if writes:
        input_usd = max(input_usd, _usd_or_zero(writes[0]), _usd_or_zero(writes[1]))
    return input_usd, _usd_or_zero(output_price)


def _usd_or_zero(price: Any) -> float:
    return 0.0 if price is None else float(price) or 0.0


def reservation_usd(
    input_tokens: int, max_tokens: int, prices: Iterable[Any], *, cache_write: bool = False
) -> float:
    """The worst-case cost of a request over every endpoint its plan may reach.

    `prices` holds one price table per reachable endpoint: a mapping or an object with `input`,
    `output` and optionally `cache_write` / `cache_write_1h` (USD per million tokens). Input is
    charged at the dearest cache-write price when the request carries `cache_control` (when that
    price is known and higher), output at `max_tokens`. The result is rounded up to a whole nano-dollar so that a
    reservation never falls short of the cost it covers.
    """
    worst = 0.0
    for table in prices:
        input_price, output_price = _rates(table, cache_write)
        cost = (input_tokens * input_price + max_tokens * output_price) / TOKENS_PER_PRICE_UNIT
        worst = max(worst, cost)
    return math.ceil(round(worst * NANOS_PER_USD, 3)) / NANOS_PER_USD


# -- a sound bound of a request's input ----------------------------------------------------
# A token covers at least one byte of UTF-8 text, and a JSON body is never smaller than the text
# it carries (escapes only lengthen it), so the body's bytes bound its text's tokens. What is not
# text in the body (base64 image and document data) or not in the body at all (content by URL or
# file id, container uploads, the results of server tools) is bounded item by item below.
# The tool-use system prompt the upstream adds when a request has tools: the largest Anthropic
# documents (530 tokens, Claude 3 Opus; 346 for Claude 4 models).
TOOL_PROMPT_MAX_TOKENS = 530
# The `type` values of everything whose size the body's bytes bound: text and tool blocks, cache
# control, JSON Schema types, thinking and tool_choice settings. A body whose every `type` is one of
# these (and that has no `mcp_servers`) is bounded by its length alone, without being decoded; any
# other `type` (an image, a document, a source by URL or file id, a container upload, a server
# tool...) has the body decoded and walked by `census`. Unknown types take the walk: the safe side.
BOUNDED_TYPES = frozenset({
    b"text", b"tool_use", b"tool_result", b"thinking", b"redacted_thinking", b"ephemeral", b"custom",
    b"object", b"string", b"array", b"boolean", b"number", b"integer", b"null",
    b"enabled", b"disabled", b"adaptive", b"auto", b"any", b"tool", b"none", b"json_schema",
})
# A `type` member as JSON writes it; a value holding an escape stops at it and so is unknown.
_TYPE_VALUE = re.compile(rb'"type"[ \t\r\n]*:[ \t\r\n]*"([^"\\]*)')
# An ASCII letter written as a \u escape: no encoder does that, but it could hide a `type` key or
# value from _TYPE_VALUE, so such a body takes the walk.
_ESCAPED_LETTER = re.compile(rb"\\u00(?:[46][1-9a-fA-F]|[57][0-9aA])")


@dataclass(frozen=True, slots=True)
class InputCeilings:
    """What a reservation assumes for content whose size the body does not show (tokens)."""
    image: int = 1_600          # Anthropic: a full-size image (1.15 megapixels) is ~1,600 tokens, the most
    item: int = 100_000         # a document, or any content by URL / file id, when no count_tokens answers
    server_tool_use: int = 25_000  # the result of one server tool use (a search, a fetched page)
    server_tool_uses: int = 10  # uses assumed of a server tool that sets no max_uses


@dataclass(slots=True)
class ContentCensus:
    """What a body holds beyond its text: found by `census` in one walk of the decoded body."""
    binary_bytes: int = 0       # base64 data, counted by item instead of as text
    images: int = 0             # images whose size is bounded by the per-image maximum
    unknown: int = 0            # items only the upstream can size (documents, URLs, file ids, uploads)
    server_tool_uses: int = 0   # uses of server tools, by their max_uses

    @property
    def needs_upstream(self) -> bool:
        """Content only the upstream can size. Server tools alone are no reason to count: their
        results do not exist yet, and the body's bytes bound the rest."""
        return self.unknown > 0


def has_unbounded_content(raw: bytes, *, mcp_servers: bool | None = None) -> bool:
    """Whether the body may hold content its byte length does not bound: one search for its `type`
    values (a property named `url` in a tool's schema, say, is no reason). `mcp_servers`: whether
    the body has that top-level member, when the caller's parse knows (else it is searched for)."""
    if mcp_servers is None:
        mcp_servers = b'"mcp_servers"' in raw
    if mcp_servers or not BOUNDED_TYPES.issuperset(_TYPE_VALUE.findall(raw)):
        return True
    return b"\\u00" in raw and _ESCAPED_LETTER.search(raw) is not None


def census(body: Mapping[str, Any], ceilings: InputCeilings) -> ContentCensus:
    found = ContentCensus()
    _census_value(body.get("system"), found)
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            _census_value(message.get("content"), found)
    max_uses = [tool.get("max_uses") for tool in body.get("tools") or ()
                if isinstance(tool, Mapping) and is_server_tool(tool.get("type"), "input_schema" in tool)]
    found.server_tool_uses = server_tool_uses(max_uses, len(body.get("mcp_servers") or ()), ceilings)
    return found


def is_server_tool(tool_type: Any, has_input_schema: bool) -> bool:
    """A tool the upstream runs (web search, code execution...): a type other than `custom`, and no
    schema of its own."""
    return not has_input_schema and tool_type not in (None, "custom")


def server_tool_uses(max_uses: Iterable[Any], mcp_servers: int, ceilings: InputCeilings) -> int:
    """The uses a reservation counts of the server tools whose `max_uses` are given (a positive
    integer, else `ceilings.server_tool_uses`) and of `mcp_servers` MCP servers (the ceiling each)."""
    uses = sum(n if type(n) is int and n > 0 else ceilings.server_tool_uses for n in max_uses)
    return uses + mcp_servers * ceilings.server_tool_uses


def _census_value(value: Any, found: ContentCensus) -> None:
    if isinstance(value, list):
        for item in value:
            _census_value(item, found)
    elif isinstance(value, Mapping):
        kind = value.get("type")
        source = value.get("source")
        if kind in ("image", "document") and isinstance(source, Mapping):
            data = source.get("data")
            if source.get("type") == "base64" and isinstance(data, str):
                found.binary_bytes += len(data)
            if kind == "image" and source.get("type") == "base64":
                found.images += 1
            elif source.get("type") not in ("text", "content"):
                found.unknown += 1  # a document's pages, or anything by URL or file id
        elif kind == "container_upload":
            found.unknown += 1
        for name, inner in value.items():
            if name != "source" or kind not in ("image", "document"):
                _census_value(inner, found)
            elif isinstance(inner, Mapping) and inner.get("type") == "content":
                _census_value(inner.get("content"), found)


def input_bound(body_bytes: int, *, tools: bool, found: ContentCensus | None = None,
                ceilings: InputCeilings | None = None, counted: int | None = None) -> int:
    """An upper bound of a request's input tokens.

    `counted` is the upstream's own count_tokens answer when it gave one: exact for the body,
    server tools' results excepted (they do not exist yet when counting)."""
    tool_prompt = TOOL_PROMPT_MAX_TOKENS if tools else 0
    ceilings = ceilings or InputCeilings()
    if found is None:
        return body_bytes + tool_prompt
    tools_results = found.server_tool_uses * ceilings.server_tool_use
    if counted is not None:
        return counted + tools_results
    return (body_bytes - found.binary_bytes + found.images * ceilings.image + found.unknown * ceilings.item
            + tool_prompt + tools_results)

