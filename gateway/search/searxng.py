"""SearXNG (self-hosted metasearch): `GET {searxng_url}/search?q=...&format=json`.

The instance must list `json` under `search.formats` in its settings.yml (it answers 403
otherwise). It takes no domain filters; `domains.filter_results` applies them to what it returns.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.search.base import SearchResult, UserLocation
from gateway.search.http import HttpBackend, with_urls
from gateway.upstream import Client


class SearxngBackend(HttpBackend):
    name = "searxng"

    def __init__(self, client: Client, base_url: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        # The key is for instances behind a proxy that wants a bearer token.
        super().__init__(client, api_key or "", base_url=base_url, timeout=timeout)

    @staticmethod
    def parse_answer(data: Any) -> list[SearchResult]:
        return [SearchResult(url=url, title=str(item.get("title") or url), snippet=str(item.get("content") or ""),
                             page_age=item.get("publishedDate") or None)
                for url, item in with_urls(data["results"])]

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return await self.get("/search", {"q": query, "format": "json", "pageno": "1"}, headers)
