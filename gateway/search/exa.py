"""Exa: `POST https://api.exa.ai/search` with the key in `x-api-key`.

Asks for highlights as the snippet; domain filters go as `includeDomains` / `excludeDomains`
(plain hosts) and are applied again to the results; the user's country as `userLocation`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.search.base import MAX_RESULTS_CAP, SearchBackend, SearchResult, UserLocation
from gateway.search.domains import bare_hosts
from gateway.search.http import call_json
from gateway.upstream import Client

DEFAULT_URL = "https://api.exa.ai"
SNIPPET_CHARS = 1000


def parse_answer(data: Any) -> list[SearchResult]:
    results = []
    for item in data["results"]:
        url = item.get("url")
        if not isinstance(url, str) or not url:
            continue
        highlights = item.get("highlights") or []
        snippet = " … ".join(h for h in highlights if isinstance(h, str)) or str(item.get("text") or "")
        results.append(SearchResult(url=url, title=str(item.get("title") or url), snippet=snippet[:SNIPPET_CHARS],
                                    page_age=item.get("publishedDate") or None))
    return results


class ExaBackend(SearchBackend):
    name = "exa"

    def __init__(self, client: Client, api_key: str, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        self.client = client
        self.api_key = api_key
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self.timeout = timeout

    async def search(self, query: str, *, max_results: int, allowed_domains: Sequence[str] = (),
                     blocked_domains: Sequence[str] = (),
                     user_location: UserLocation | None = None) -> list[SearchResult]:
        body: dict[str, Any] = {"query": query, "type": "auto",
                                "numResults": max(1, min(max_results, MAX_RESULTS_CAP)),
                                "contents": {"highlights": {"maxCharacters": SNIPPET_CHARS}}}
        if allowed_domains:
            body["includeDomains"] = bare_hosts(allowed_domains)
        if blocked_domains:
            body["excludeDomains"] = bare_hosts(blocked_domains)
        if user_location is not None and user_location.country:
            body["userLocation"] = user_location.country.upper()
        headers = {"content-type": "application/json", "accept": "application/json", "x-api-key": self.api_key}
        return await call_json(self.client, self.name, "POST", f"{self.base_url}/search", headers,
                               orjson.dumps(body), timeout=self.timeout, parse=parse_answer)
