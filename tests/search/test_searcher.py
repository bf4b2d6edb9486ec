"""One search end to end through `Searcher`: domain filters, the results cache (in process, the
memory store and a real Redis), the metric, and failures as outcomes rather than exceptions."""
from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from gateway.search.base import SearchQuery, SearchResult
from gateway.search.cache import MemoryCache, StoreCache, cache_name
from gateway.search.domains import filter_results, parse_rule
from gateway.search.service import Searcher, create_backend
from gateway.search.settings import SearchSettings
from gateway.store.base import create_store
from tests.fakes.search import FakeResult, json_reply

pytestmark = pytest.mark.anyio


def searches(backend: str, team: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("gateway_search_requests_total",
                                     {"backend": backend, "team": team, "outcome": outcome}) or 0.0


def searcher_for(fake_servers, client, *, cache=None, team="team-a", **settings):
    fake = fake_servers["searxng"]
    config = SearchSettings(searxng_url=fake.url, **settings)
    return Searcher(create_backend(config, client), config, cache=cache, team=team), fake


# -- domain rules -------------------------------------------------------------------------------
def r(url: str) -> SearchResult:
    return SearchResult(url=url, title=url)


def test_a_domain_matches_itself_and_its_subdomains_only():
    kept = filter_results([r("https://example.com/a"), r("https://docs.example.com/b"), r("https://badexample.com/"),
                           r("https://example.com.evil.net/")], allowed=["example.com"])
    assert [x.url for x in kept] == ["https://example.com/a", "https://docs.example.com/b"]


def test_a_path_rule_matches_that_path_and_below():
    kept = filter_results([r("https://example.com/blog"), r("https://example.com/blog/post"),
                           r("https://example.com/blogger"), r("https://example.com/")], allowed=["example.com/blog"])
    assert [x.url for x in kept] == ["https://example.com/blog", "https://example.com/blog/post"]


def test_blocked_domains_win_and_non_http_urls_never_pass():
    kept = filter_results([r("https://a.sample.net/"), r("https://ok.org/"), r("ftp://ok.org/f"), r("javascript:x")],
                          blocked=["sample.net"])
    assert [x.url for x in kept] == ["https://ok.org/"]


def test_a_wildcard_rule_matches_subdomains_but_not_the_apex():
    rule = parse_rule("*.Example.com")
    assert rule.matches("www.example.com", "") and not rule.matches("example.com", "")


@pytest.mark.parametrize("bad", ["https://example.com", "", "exa mple.com", "*", "no-dot"])
def test_malformed_domains_are_refused(bad):
    with pytest.raises(ValueError):
        parse_rule(bad)


# -- searches -----------------------------------------------------------------------------------
async def test_request_filters_and_the_teams_policy_both_apply(fake_servers, client):
    searcher, fake = searcher_for(fake_servers, client, blocked_domains=["sample.net"])
    outcome = await searcher.run(SearchQuery("q", allowed_domains=("example.com", "example.org")))
    assert outcome.ok and [x.url for x in outcome.results] == ["https://www.example.com/news/1",
                                                              "https://docs.example.org/guide"]
    outcome = await searcher.run(SearchQuery("q2", blocked_domains=("example.org",)))
    assert [x.url for x in outcome.results] == ["https://www.example.com/news/1"]


async def test_results_are_cut_to_max_results(fake_servers, client):
    searcher, _ = searcher_for(fake_servers, client)
    outcome = await searcher.run(SearchQuery("q", max_results=2))
    assert len(outcome.results) == 2


async def test_a_failing_backend_gives_an_error_outcome_and_counts_it(fake_servers, client):
    searcher, fake = searcher_for(fake_servers, client, team="team-fail")
    fake.enqueue(json_reply({}, 503))
    outcome = await searcher.run(SearchQuery("q"))
    assert outcome.error == "unavailable" and outcome.results == []
    assert searches("searxng", "team-fail", "unavailable") == 1


async def test_an_empty_or_overlong_query_never_reaches_the_backend(fake_servers, client):
    searcher, fake = searcher_for(fake_servers, client)
    assert (await searcher.run(SearchQuery("   "))).error == "invalid_tool_input"
    assert (await searcher.run(SearchQuery("x" * 2001))).error == "query_too_long"
    assert fake.requests == []


async def test_the_memory_cache_answers_a_repeated_search_without_the_backend(fake_servers, client):
    searcher, fake = searcher_for(fake_servers, client, cache=MemoryCache(), team="team-cache")
    first = await searcher.run(SearchQuery("cached query"))
    fake.results = [FakeResult("https://changed.example.com/", "changed")]
    second = await searcher.run(SearchQuery("cached query"))
    assert len(fake.requests) == 1
    assert second.cached and second.results == first.results
    assert searches("searxng", "team-cache", "ok") == 1 and searches("searxng", "team-cache", "cached") == 1
    other = await searcher.run(SearchQuery("cached query", blocked_domains=("example.org",)))
    assert not other.cached and len(fake.requests) == 2


async def test_a_cache_entry_expires_after_its_ttl():
    now = [100.0]
    cache = MemoryCache(clock=lambda: now[0])
    await cache.set("k", [SearchResult("https://a.example.com/", "a")], 10)
    assert await cache.get("k") is not None
    now[0] = 110.0
    assert await cache.get("k") is None


async def test_a_cache_ttl_of_zero_turns_the_cache_off(fake_servers, client):
    searcher, fake = searcher_for(fake_servers, client, cache=MemoryCache(), cache_ttl=0)
    await searcher.run(SearchQuery("q"))
    await searcher.run(SearchQuery("q"))
    assert len(fake.requests) == 2


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_store_cache_is_shared_through_the_store(backend, fake_servers, client, request):
    url = None
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    store, replica = create_store(url), create_store(url)
    if url is None:
        replica = store
    try:
        first, fake = searcher_for(fake_servers, client, cache=StoreCache(store), cache_ttl=30)
        second = Searcher(first.backend, first.settings, cache=StoreCache(replica))
        a = await first.run(SearchQuery("shared"))
        b = await second.run(SearchQuery("shared"))
        assert len(fake.requests) == 1 and b.cached and b.results == a.results
        if url is not None:
            with server.client() as redis:
                names = redis.keys("gw:cache:search:*")
                assert len(names) == 1 and 0 < redis.pttl(names[0]) <= 30_000
    finally:
        await store.close()
        if replica is not store:
            await replica.close()


async def test_an_unreachable_store_is_only_a_cache_miss(fake_servers, client):
    from tests.redis_server import free_port
    store = create_store(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.2, operation_timeout=0.3)
    try:
        searcher, fake = searcher_for(fake_servers, client, cache=StoreCache(store))
        outcome = await searcher.run(SearchQuery("q"))
        assert outcome.ok and len(outcome.results) == 3
    finally:
        await store.close()


def test_cache_names_are_fixed_length_whatever_the_query():
    assert len(cache_name("a")) == len(cache_name("x" * 5000)) == len("search:") + 64


async def test_teams_with_the_gateways_settings_share_its_backend_and_a_disabled_team_has_none(fake_servers, client):
    from gateway.search.service import SearchService
    from gateway.search.settings import merge_search
    base = SearchSettings(searxng_url=fake_servers["searxng"].url)
    service = SearchService(base, client, cache=MemoryCache())
    a, b = service.searcher("team-a"), service.searcher("team-b")
    assert a.backend is b.backend and a.cache is b.cache and (a.team, b.team) == ("team-a", "team-b")
    brave = service.searcher("team-c", merge_search(base, {"backend": "brave", "api_key": "k"}))
    assert brave.backend.name == "brave"
    assert service.searcher("team-d", merge_search(base, {"enabled": False})) is None
    assert SearchService(SearchSettings(), client).searcher("team-a") is None
