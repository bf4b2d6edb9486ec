"""SearXNG (self-hosted metasearch): `GET {searxng_url}/search?q=...&format=json`.

The instance must list `json` under `search.formats` in its settings.yml (it answers 403
otherwise). It takes no domain filters; `domains.filter_results` applies them to what it returns.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from gateway.search.base import SearchBackend, SearchResult, UserLocation
from gateway.search.http import call_json
from gateway.upstream import Client


def parse_answer(data: Any) -> list[SearchResult]:
    results = []
    for item in data["results"]:
        url = item.get("url")
        if not isinstance(url, str) or not url:
            continue
        results.append(SearchResult(url=url, title=str(item.get("title") or url),
                                    snippet=str(item.get("content") or ""),
                                    page_age=item.get("publishedDate") or None))
    return results


class SearxngBackend(SearchBackend):
    name = "searxng"

    def __init__(self, client: Client, base_url: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key  # for instances behind a proxy that wants a bearer token
        self.timeout = timeout

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        params = {"q": query, "format": "json", "pageno": "1"}
        headers = {"accept": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        results = await call_json(self.client, self.name, "GET", f"{self.base_url}/search?{urlencode(params)}",
                                  headers, b"", timeout=self.timeout, parse=parse_answer)
        return results
