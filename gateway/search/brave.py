"""Brave Search: `GET https://api.search.brave.com/res/v1/web/search`, key in `X-Subscription-Token`.

`count` is at most 20; `country` comes from the user's location. Domain filters are applied to the
results (Brave has no domain parameters; `site:` in the query would change what is searched).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from gateway.search.base import MAX_RESULTS_CAP, SearchBackend, SearchResult, UserLocation
from gateway.search.http import call_json, strip_tags
from gateway.upstream import Client

DEFAULT_URL = "https://api.search.brave.com"


def parse_answer(data: Any) -> list[SearchResult]:
    web = data.get("web") or {}
    results = []
    for item in web.get("results") or []:
        url = item.get("url")
        if not isinstance(url, str) or not url:
            continue
        results.append(SearchResult(url=url, title=strip_tags(str(item.get("title") or url)),
                                    snippet=strip_tags(str(item.get("description") or "")),
                                    page_age=item.get("page_age") or item.get("age") or None))
    return results


class BraveBackend(SearchBackend):
    name = "brave"

    def __init__(self, client: Client, api_key: str, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        self.client = client
        self.api_key = api_key
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self.timeout = timeout

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        params = {"q": query, "count": str(max(1, min(max_results, MAX_RESULTS_CAP)))}
        if user_location is not None and user_location.country:
            params["country"] = user_location.country.upper()
        headers = {"accept": "application/json", "x-subscription-token": self.api_key}
        return await call_json(self.client, self.name, "GET",
                               f"{self.base_url}/res/v1/web/search?{urlencode(params)}", headers, b"",
                               timeout=self.timeout, parse=parse_answer)
