"""Running one search: the query checked, the cache asked, the backend called, the filters
applied, the outcome counted. `Searcher.run` never raises for a failed search: the outcome carries
the error code the client sees in its `web_search_tool_result_error`.
"""
from __future__ import annotations

from collections.abc import Sequence

from gateway import metrics
from gateway.search.base import (INVALID_INPUT, MAX_QUERY_CHARS, QUERY_TOO_LONG, SearchBackend, SearchFailed,
                                 SearchOutcome, SearchQuery)
from gateway.search.brave import BraveBackend
from gateway.search.cache import SearchCache
from gateway.search.domains import filter_results, parse_rules
from gateway.search.exa import ExaBackend
from gateway.search.searxng import SearxngBackend
from gateway.search.settings import SearchSettings
from gateway.search.tavily import TavilyBackend
from gateway.upstream import Client


def create_backend(settings: SearchSettings, client: Client) -> SearchBackend | None:
    """The backend the settings name, calling out through `client`; None when search is off."""
    backend = settings.resolved_backend
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    if backend == "searxng":
        return SearxngBackend(client, settings.searxng_url or "", api_key=key, timeout=settings.timeout)
    if backend == "brave":
        return BraveBackend(client, key or "", base_url=settings.base_url, timeout=settings.timeout)
    if backend == "tavily":
        return TavilyBackend(client, key or "", base_url=settings.base_url, timeout=settings.timeout)
    if backend == "exa":
        return ExaBackend(client, key or "", base_url=settings.base_url, timeout=settings.timeout)
    return None


def check_query(query: object) -> str:
    if not isinstance(query, str) or not query.strip():
        raise SearchFailed(INVALID_INPUT, "the search query must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchFailed(QUERY_TOO_LONG, f"the search query is longer than {MAX_QUERY_CHARS} characters")
    return query.strip()


class Searcher:
    """One team's searches: its backend, its domain policy, and the shared cache."""

    def __init__(self, backend: SearchBackend, settings: SearchSettings, *, cache: SearchCache | None = None,
                 team: str = "") -> None:
        self.backend = backend
        self.settings = settings
        self.cache = cache
        self.team = team
        # The operator's and team's policy, applied to every result whatever the request asks.
        self._policy_allowed = parse_rules(settings.allowed_domains)
        self._policy_blocked = parse_rules(settings.blocked_domains)

    def query(self, text: str, *, allowed_domains: Sequence[str] = (), blocked_domains: Sequence[str] = (),
              user_location=None, max_results: int | None = None) -> SearchQuery:
        return SearchQuery(query=text, max_results=max_results or self.settings.max_results,
                           allowed_domains=tuple(allowed_domains), blocked_domains=tuple(blocked_domains),
                           user_location=user_location)

    async def run(self, query: SearchQuery) -> SearchOutcome:
        name = self.backend.name
        try:
            text = check_query(query.query)
            parse_rules(query.allowed_domains)
            parse_rules(query.blocked_domains)
        except SearchFailed as failed:
            metrics.count_search(name, self.team, failed.code)
            return SearchOutcome(query=str(query.query), error=failed.code)
        except ValueError:
            metrics.count_search(name, self.team, INVALID_INPUT)
            return SearchOutcome(query=text, error=INVALID_INPUT)
        key = query.cache_key(name) + "\x1e" + ",".join(self.settings.allowed_domains) + "\x1e" + \
            ",".join(self.settings.blocked_domains)
        if self.cache is not None and self.settings.cache_ttl > 0:
            found = await self.cache.get(key)
            if found is not None:
                metrics.count_search(name, self.team, "cached")
                return SearchOutcome(query=text, results=found, cached=True)
        # The backend hears of the filters where it can use them; the results are filtered here anyway.
        allowed = list(query.allowed_domains) or list(self.settings.allowed_domains)
        blocked = list(dict.fromkeys([*query.blocked_domains, *self.settings.blocked_domains]))
        try:
            raw = await self.backend.search(text, max_results=query.max_results, allowed_domains=allowed,
                                            blocked_domains=blocked, user_location=query.user_location)
        except SearchFailed as failed:
            metrics.count_search(name, self.team, failed.code)
            return SearchOutcome(query=text, error=failed.code)
        results = filter_results(raw, self._policy_allowed, self._policy_blocked)
        results = filter_results(results, query.allowed_domains, query.blocked_domains)[:query.max_results]
        if self.cache is not None and self.settings.cache_ttl > 0:
            await self.cache.set(key, results, self.settings.cache_ttl)
        metrics.count_search(name, self.team, "ok")
        return SearchOutcome(query=text, results=results)


class SearchService:
    """The gateway's searches: one backend per distinct team configuration (teams that share the
    gateway's settings share its backend), one cache for all."""

    def __init__(self, settings: SearchSettings, client: Client, cache: SearchCache | None = None) -> None:
        self.settings = settings
        self.client = client
        self.cache = cache
        self._backends: dict[str, SearchBackend | None] = {}

    def searcher(self, team: str, settings: SearchSettings | None = None) -> Searcher | None:
        """The team's Searcher (`settings`: the team's merged settings, from `merge_search`), or
        None when search is off for it."""
        settings = settings or self.settings
        backend_key = settings.model_dump_json(include={"enabled", "backend", "searxng_url", "base_url", "timeout"}) + \
            (settings.api_key.get_secret_value() if settings.api_key is not None else "")
        if backend_key not in self._backends:
            if len(self._backends) > 1024:
                self._backends.clear()
            self._backends[backend_key] = create_backend(settings, self.client)
        backend = self._backends[backend_key]
        return None if backend is None else Searcher(backend, settings, cache=self.cache, team=team)
