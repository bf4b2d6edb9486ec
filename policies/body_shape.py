"""A Messages body's content census, read by one typed decode of its bytes.

`limits.census` walks a body decoded to objects; for a 31 KB Claude Code turn that decode alone
costs more than a small request's whole path, and byte searches for `"type"` values cost almost as
much (JSON's quotes defeat a byte search's skipping). The decoder here declares only what the census
reads (content blocks' `type`, `source`, nested `content` and `cache_control`; tools' `type`,
`input_schema`, `max_uses` and `cache_control`; `mcp_servers`) and steps over everything else in C:
about 11 µs for that turn. Escapes are no disguise: the decoder reads `"\\u0074ype"` as `type`.

A body of another shape than the API's (a block that is not an object, a `type` that is not a
string, content nested where the API puts none) does not decode: `read_shape` answers None and the
caller takes the walk, which takes anything.

`read_members_shape` finds the same from the body's top-level values, which the request's parse
read already: only the members the census reads are decoded, and the system prompt's and the
tools' shapes are remembered by their bytes, so that a Claude Code turn has only its messages
decoded.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Union

import msgspec

from policies.limits import ContentCensus, InputCeilings, is_server_tool, server_tool_uses


# The decoded objects live for one tally and hold no cycles: gc=False keeps the collector from
# tracking each of them.
class _Source(msgspec.Struct, gc=False):
    type: str = ""
    data: msgspec.Raw = msgspec.Raw()  # empty: absent (a Raw takes any value, null too)
    content: Union[str, list["_Block"], None] = None


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    source: Union[_Source, str, None] = None  # a search result's source is its URL
    # tool_result and search_result hold blocks; a server tool's result holds results or an error object.
    content: Union[str, list["_Block"], "_Block", None] = None
    cache_control: msgspec.Raw = msgspec.Raw()


class _Message(msgspec.Struct, gc=False):
    content: Union[str, list[_Block], None] = None


class _Tool(msgspec.Struct, gc=False):
    type: Union[str, None] = None
    input_schema: msgspec.Raw = msgspec.Raw()
    max_uses: msgspec.Raw = msgspec.Raw()
    cache_control: msgspec.Raw = msgspec.Raw()


class _Body(msgspec.Struct, gc=False):
    system: Union[str, list[_Block], None] = None
    messages: Union[list[_Message], None] = None
    tools: Union[list[_Tool], None] = None
    mcp_servers: Union[list[msgspec.Raw], None] = None
    cache_control: msgspec.Raw = msgspec.Raw()  # automatic caching of the whole prompt


_DECODER = msgspec.json.Decoder(_Body)
_INDEX = re.compile(r"\[(\d+)\]")  # msgspec's `$.messages[0].content` is the API's `messages.0.content`
_INT = msgspec.json.Decoder(int)


class BodyShape(msgspec.Struct, frozen=True):
    """What the typed decode found, before ceilings apply."""
    binary_bytes: int          # bytes of base64 data values, counted by item instead of as text
    images: int                # base64 images, bounded by the per-image maximum
    unknown: int               # items only the upstream can size
    server_tools: tuple[int | None, ...]  # each server tool's max_uses (None: unset or not a positive integer)
    mcp_servers: int
    kinds: frozenset[str]      # the `type` of every content block and tool
    caches: bool               # a cache_control anywhere the API takes one: input may be billed as cache writes

    def census(self, ceilings: InputCeilings) -> ContentCensus:
        return ContentCensus(binary_bytes=self.binary_bytes, images=self.images, unknown=self.unknown,
                             server_tool_uses=server_tool_uses(self.server_tools, self.mcp_servers, ceilings))


def read_shape(raw: bytes) -> BodyShape | None:
    """The body's shape, or None when it is not shaped as the decoder expects (or not JSON)."""
    try:
        body = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    tally = _Tally()
    tally.blocks(body.system)
    for message in body.messages or ():
        tally.blocks(message.content)
    tally.tools(body.tools)
    return tally.shape(mcp_servers=len(body.mcp_servers or ()), caches=bool(body.cache_control))


# Each member's decoder, as the whole body's decoder reads that member.
_SYSTEM = msgspec.json.Decoder(Union[str, list[_Block], None])
_MESSAGES = msgspec.json.Decoder(Union[list[_Message], None])
_TOOLS = msgspec.json.Decoder(Union[list[_Tool], None])
_MCP_SERVERS = msgspec.json.Decoder(Union[list[msgspec.Raw], None])


def read_members_shape(values: Mapping[str, msgspec.Raw]) -> BodyShape | None:
    """`read_shape` of a body from its top-level values (`jsonedit.top_level_values`), which must
    be all of its members: with a key repeated, the whole body's decoder would check the value
    the top-level decoder dropped too. Only the members the census reads are decoded, each on its
    own; the system prompt's and the tools' shapes are remembered (`_Remembered`)."""
    system, messages, tools, mcp_servers = (values.get("system"), values.get("messages"), values.get("tools"),
                                            values.get("mcp_servers"))
    tally = _Tally()
    try:
        if system is not None:
            tally.add(_SYSTEM_SHAPES.shape(system))
        if messages is not None:
            for message in _MESSAGES.decode(messages) or ():
                tally.blocks(message.content)
        if tools is not None:
            tally.add(_TOOLS_SHAPES.shape(tools))
        servers = _MCP_SERVERS.decode(mcp_servers) if mcp_servers is not None else None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return tally.shape(mcp_servers=len(servers or ()), caches="cache_control" in values)


def _system_shape(value: msgspec.Raw) -> BodyShape:
    tally = _Tally()
    tally.blocks(_SYSTEM.decode(value))
    return tally.shape(mcp_servers=0, caches=False)


def _tools_shape(value: msgspec.Raw) -> BodyShape:
    tally = _Tally()
    tally.tools(_TOOLS.decode(value))
    return tally.shape(mcp_servers=0, caches=False)


class _Remembered:
    """The shapes of one member's recent values, found again by their bytes: a Claude Code session
    sends the same system prompt and tools with every turn, most of its body, and comparing
    bytes costs a fortieth of decoding them. A value is looked up by its length and its shape
    taken only when every byte is the same. Values over `largest` bytes are decoded every time;
    the least recently used are forgotten to keep at most `budget` bytes."""

    def __init__(self, read: Callable[[msgspec.Raw], BodyShape], *, largest: int = 256 * 1024,
                 budget: int = 4 * 1024 * 1024) -> None:
        self._read = read
        self.largest, self.budget = largest, budget
        self._known: dict[int, tuple[msgspec.Raw, BodyShape]] = {}  # by length, least recently used first
        self.size = 0  # bytes of the values kept

    def shape(self, value: msgspec.Raw) -> BodyShape:
        """Raises what the member's decoder raises; a value that fails is not remembered."""
        length = len(value)
        known = self._known.pop(length, None)
        if known is not None and known[0] == value:
            self._known[length] = known  # the newest again
            return known[1]
        if known is not None:
            self.size -= length
        shape = self._read(value)
        if length <= self.largest:
            self._known[length] = (value.copy(), shape)  # a copy: the request's body is not kept alive
            self.size += length
            while self.size > self.budget:
                oldest = next(iter(self._known))
                del self._known[oldest]
                self.size -= oldest
        return shape


_SYSTEM_SHAPES = _Remembered(_system_shape)
_TOOLS_SHAPES = _Remembered(_tools_shape)


def shape_problem(raw: bytes) -> str | None:
    """What makes the body another shape than the API's, naming where (`messages.0.content: ...`),
    or None when it has the API's shape: the client's error where the gateway itself must read the
    content (a translating protocol), which an Anthropic upstream would answer with a 400 too."""
    try:
        _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `$")
        reason = reason[:1].lower() + reason[1:]
        if not where:
            return f"request body: {reason}"
        path = _INDEX.sub(r".\1", where.rstrip("`")).lstrip(".")
        return f"{path}: {reason}"
    except msgspec.DecodeError as exc:
        return f"request body is not valid JSON: {exc}"
    except RecursionError:
        return "request body is nested too deeply"
    return None


def _positive_int(raw: msgspec.Raw) -> int | None:
    if not raw:
        return None
    try:
        value = _INT.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return value if value > 0 else None


class _Tally:
    """The census of `limits._census_value`, over typed blocks and tools."""
    __slots__ = ("binary_bytes", "images", "unknown", "kinds", "caches", "server_tools")

    def __init__(self) -> None:
        self.binary_bytes = self.images = self.unknown = 0
        self.kinds: set[str] = set()
        self.caches = False
        self.server_tools: list[int | None] = []

    def shape(self, *, mcp_servers: int, caches: bool) -> BodyShape:
        return BodyShape(binary_bytes=self.binary_bytes, images=self.images, unknown=self.unknown,
                         server_tools=tuple(self.server_tools), mcp_servers=mcp_servers,
                         kinds=frozenset(self.kinds), caches=self.caches or caches)

    def add(self, shape: BodyShape) -> None:
        """What another tally found (of a member's value), its MCP servers aside."""
        self.binary_bytes += shape.binary_bytes
        self.images += shape.images
        self.unknown += shape.unknown
        self.kinds.update(shape.kinds)
        self.caches = self.caches or shape.caches
        self.server_tools += shape.server_tools

    def tools(self, tools: list[_Tool] | None) -> None:
        kinds = self.kinds
        for tool in tools or ():
            kind = tool.type
            if tool.cache_control:
                self.caches = True
            if kind is not None:
                kinds.add(kind)
            if is_server_tool(kind, bool(tool.input_schema)):
                self.server_tools.append(_positive_int(tool.max_uses))

    def blocks(self, content: str | list[_Block] | _Block | None) -> None:
        if content is None or type(content) is str:
            return
        for block in (content,) if type(content) is _Block else content:
            kind, source = block.type, block.source
            self.kinds.add(kind)
            if block.cache_control:
                self.caches = True
            if source is not None and type(source) is _Source:
                self.sourced(kind, source)
            elif kind == "container_upload":
                self.unknown += 1
            if block.content is not None:
                self.blocks(block.content)

    def sourced(self, kind: str, source: _Source) -> None:
        """A block with a source object: the data of an image or a document, or nested content."""
        if kind in ("image", "document"):
            data = source.data
            if source.type == "base64" and bytes(memoryview(data)[:1]) == b'"':
                self.binary_bytes += len(data) - 2  # the value's bytes, quotes aside: none of it is text
            if kind == "image" and source.type == "base64":
                self.images += 1
            elif source.type not in ("text", "content"):
                self.unknown += 1  # a document's pages, or anything by URL or file id
            if source.type == "content":
                self.blocks(source.content)
        else:
            if kind == "container_upload":
                self.unknown += 1
            self.blocks(source.content)
