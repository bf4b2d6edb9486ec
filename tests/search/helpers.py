from __future__ import annotations

import pytest

from gateway.search.base import SearchBackend, SearchFailed
from gateway.search.brave import BraveBackend
from gateway.search.exa import ExaBackend
from gateway.search.searxng import SearxngBackend
from gateway.search.tavily import TavilyBackend

BACKENDS = ["searxng", "brave", "tavily", "exa"]


def backend_for(name: str, fake, client, *, api_key: str | None = None, timeout: float = 2.0):
    key = fake.api_key if api_key is None else api_key
    if name == "searxng":
        return SearxngBackend(client, fake.url, timeout=timeout)
    cls = {"brave": BraveBackend, "tavily": TavilyBackend, "exa": ExaBackend}[name]
    return cls(client, key, base_url=fake.url, timeout=timeout)


async def failure_of(backend: SearchBackend) -> SearchFailed:
    """The failure a search for "q" through `backend` ends in (the test fails if it succeeds)."""
    with pytest.raises(SearchFailed) as failed:
        await backend.search("q", max_results=3)
    return failed.value
