"""What a request asks of the gateway's search, read once: the server tool, the web plugin (or
`:online`), response healing, and what it may cost at most (for the budget reservation).

`might_search` is the hot path's test: a scan of the raw bytes, microseconds even for large bodies,
so that a request that asks for none of this is never decoded for it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.search.blocks import WebSearchTool, find_web_search_tool
from gateway.search.plugins import WebPlugin, merged_web, parse_plugins, strip_online
from gateway.search.settings import SearchSettings
from gateway.search.tokens import PREFIX as TOKEN_PREFIX

_MARKERS = (b'"web_search_', b'"plugins"', TOKEN_PREFIX.encode(), b"srvtoolu_gw")


def might_search(raw: bytes, model: str) -> bool:
    """False when the body cannot hold a web search tool, plugins or gateway-made search blocks
    and the model has no `:online`: the request then needs none of this module."""
    return ":online" in model.lower() or any(marker in raw for marker in _MARKERS)


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
