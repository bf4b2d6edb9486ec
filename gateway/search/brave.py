"""Brave Search: `GET https://api.search.brave.com/res/v1/web/search`, key in `X-Subscription-Token`.

`count` is at most 20; `country` comes from the user's location. Domain filters are applied to the
results (Brave has no domain parameters; `site:` in the query would change what is searched).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.search.base import SearchResult, UserLocation
from gateway.search.http import HttpBackend, result_count, strip_tags, with_urls


class BraveBackend(HttpBackend):
    name = "brave"
    default_url = "https://api.search.brave.com"

    @staticmethod
    def parse_answer(data: Any) -> list[SearchResult]:
        web = data.get("web") or {}
        return [SearchResult(url=url, title=strip_tags(str(item.get("title") or url)),
                             snippet=strip_tags(str(item.get("description") or "")),
                             page_age=item.get("page_age") or item.get("age") or None)
                for url, item in with_urls(web.get("results") or [])]

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        params = {"q": query, "count": str(result_count(max_results))}
        if user_location is not None and user_location.country:
            params["country"] = user_location.country.upper()
        return await self.get("/res/v1/web/search", params, {"x-subscription-token": self.api_key})
