"""What a request asks of the gateway's search, read once: the server tool, the web plugin (or
`:online`), response healing, and what it may cost at most (for the budget reservation).

`might_search` is the hot path's test, so that a request that asks for none of this is never
decoded for it: the body's top-level members (already read by the request parser) for `plugins`,
the model id for `:online`, and the `type` of its blocks and tools (the body's typed census, which
the reservation reads too) for `web_search_`, the start of both the server tool's type
(`web_search_20250305`...) and of every search result block in a history (`web_search_tool_result`,
the gateway's own among them). A body the census cannot read is searched for the marker instead.
"""
from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.search.blocks import WebSearchTool, find_web_search_tool
from gateway.search.plugins import WebPlugin, merged_web, parse_plugins, strip_online
from gateway.search.settings import SearchSettings

_KIND_PREFIX = "web_search_"
_MARKER = _KIND_PREFIX.encode()


def might_search(raw: bytes, model: str, members: Container[str], kinds: Collection[str] | None = None) -> bool:
    """False when the body (`raw`, whose top-level member names are `members` and whose blocks'
    and tools' types are `kinds`, when its census could read them) cannot hold a web search tool,
    plugins or search blocks and the model has no `:online`: the request then needs none of this
    package."""
    if "plugins" in members or ":online" in model.lower():
        return True
    if kinds is None:
        return _MARKER in raw
    return any(kind.startswith(_KIND_PREFIX) for kind in kinds)


@dataclass(frozen=True)
class SearchIntent:
    model: str                        # the model id with `:online` removed
    tool: WebSearchTool | None = None
    web: WebPlugin | None = None
    healing: bool = False

    @property
    def searches(self) -> bool:
        return self.tool is not None or self.web is not None

    def max_searches(self, settings: SearchSettings) -> int:
        """The most searches this request can run: what the budget reservation must cover."""
        count = 0
        if self.tool is not None:
            count += min(settings.max_uses, self.tool.max_uses or settings.max_uses)
        if self.web is not None:
            count += 1
        return count

    def reservation_usd(self, settings: SearchSettings) -> float:
        return self.max_searches(settings) * settings.price_per_search


def read_intent(body: Mapping[str, Any], model: str) -> SearchIntent:
    """Raises InvalidRequest naming the member for a bad tool or plugin."""
    stripped, online = strip_online(model)
    plugins = parse_plugins(body.get("plugins"))
    return SearchIntent(model=stripped, tool=find_web_search_tool(body.get("tools")),
                        web=merged_web(plugins, online), healing=plugins.response_healing)
