"""Exa: `POST https://api.exa.ai/search` with the key in `x-api-key`.

Asks for highlights as the snippet; domain filters go as `includeDomains` / `excludeDomains`
(plain hosts) and are applied again to the results; the user's country as `userLocation`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.search.base import SearchResult, UserLocation
from gateway.search.domains import bare_hosts
from gateway.search.http import HttpBackend, result_count, with_urls

SNIPPET_CHARS = 1000


class ExaBackend(HttpBackend):
    name = "exa"
    default_url = "https://api.exa.ai"

    @staticmethod
    def parse_answer(data: Any) -> list[SearchResult]:
        results = []
        for url, item in with_urls(data["results"]):
            highlights = item.get("highlights") or []
            snippet = " … ".join(h for h in highlights if isinstance(h, str)) or str(item.get("text") or "")
            results.append(SearchResult(url=url, title=str(item.get("title") or url),
                                        snippet=snippet[:SNIPPET_CHARS], page_age=item.get("publishedDate") or None))
        return results

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        body: dict[str, Any] = {"query": query, "type": "auto", "numResults": result_count(max_results),
                                "contents": {"highlights": {"maxCharacters": SNIPPET_CHARS}}}
        if allowed_domains:
            body["includeDomains"] = bare_hosts(allowed_domains)
        if blocked_domains:
            body["excludeDomains"] = bare_hosts(blocked_domains)
        if user_location is not None and user_location.country:
            body["userLocation"] = user_location.country.upper()
        return await self.post("/search", body, {"x-api-key": self.api_key})
