"""Tavily: `POST https://api.tavily.com/search` with the key as `Authorization: Bearer`.

Domain filters go to Tavily as `include_domains` / `exclude_domains` (plain hosts) and are applied
to the results again with the full rules (paths, `*.`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.search.base import SearchResult, UserLocation
from gateway.search.domains import bare_hosts
from gateway.search.http import HttpBackend, result_count, with_urls


class TavilyBackend(HttpBackend):
    name = "tavily"
    default_url = "https://api.tavily.com"

    @staticmethod
    def parse_answer(data: Any) -> list[SearchResult]:
        return [SearchResult(url=url, title=str(item.get("title") or url), snippet=str(item.get("content") or ""),
                             page_age=item.get("published_date") or None)
                for url, item in with_urls(data["results"])]

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        body: dict[str, Any] = {"query": query, "max_results": result_count(max_results),
                                "search_depth": "basic", "topic": "general"}
        if allowed_domains:
            body["include_domains"] = bare_hosts(allowed_domains)
        if blocked_domains:
            body["exclude_domains"] = bare_hosts(blocked_domains)
        return await self.post("/search", body, {"authorization": f"Bearer {self.api_key}"})
