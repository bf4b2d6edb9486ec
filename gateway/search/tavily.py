"""Tavily: `POST https://api.tavily.com/search` with the key as `Authorization: Bearer`.

Domain filters go to Tavily as `include_domains` / `exclude_domains` (plain hosts) and are applied
to the results again with the full rules (paths, `*.`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.search.base import MAX_RESULTS_CAP, SearchBackend, SearchResult, UserLocation
from gateway.search.domains import bare_hosts
from gateway.search.http import call_json
from gateway.upstream import Client

DEFAULT_URL = "https://api.tavily.com"


def parse_answer(data: Any) -> list[SearchResult]:
    results = []
    for item in data["results"]:
        url = item.get("url")
        if not isinstance(url, str) or not url:
            continue
        results.append(SearchResult(url=url, title=str(item.get("title") or url),
                                    snippet=str(item.get("content") or ""),
                                    page_age=item.get("published_date") or None))
    return results


class TavilyBackend(SearchBackend):
    name = "tavily"

    def __init__(self, client: Client, api_key: str, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        self.client = client
        self.api_key = api_key
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self.timeout = timeout

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        body: dict[str, Any] = {"query": query, "max_results": max(1, min(max_results, MAX_RESULTS_CAP)),
                                "search_depth": "basic", "topic": "general"}
        if allowed_domains:
            body["include_domains"] = bare_hosts(allowed_domains)
        if blocked_domains:
            body["exclude_domains"] = bare_hosts(blocked_domains)
        headers = {"content-type": "application/json", "accept": "application/json",
                   "authorization": f"Bearer {self.api_key}"}
        return await call_json(self.client, self.name, "POST", f"{self.base_url}/search", headers,
                               orjson.dumps(body), timeout=self.timeout, parse=parse_answer)
