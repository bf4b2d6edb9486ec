"""Each backend against its loopback fake: the request it sends (path, auth header, query, filters)
and the results it reads, and every failure mapped to Anthropic's web search error codes."""
from __future__ import annotations

import pytest

from gateway.search.base import UserLocation
from gateway.search.brave import BraveBackend
from gateway.search.searxng import SearxngBackend
from tests.fakes.base import Reply, free_port
from tests.fakes.search import FakeResult, json_reply
from tests.search.helpers import BACKENDS, backend_for, failure_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", BACKENDS)
async def test_backend_returns_the_providers_results_for_the_query(name, fake_servers, client):
    fake = fake_servers[name]
    results = await backend_for(name, fake, client).search("gateway news", max_results=5)
    assert fake.queries == ["gateway news"]
    assert [r.url for r in results] == ["https://www.example.com/news/1", "https://docs.example.org/guide",
                                        "https://blog.sample.net/post"]
    assert results[0].title == "Example news one"
    assert results[0].snippet == "The first result's snippet."
    assert results[0].page_age == "2026-11-30"


@pytest.mark.parametrize("name", ["brave", "tavily", "exa"])
async def test_keyed_backend_sends_its_key_in_the_providers_header(name, fake_servers, client):
    fake = fake_servers[name]
    await backend_for(name, fake, client).search("q", max_results=3)
    header = {"brave": "x-subscription-token", "tavily": "authorization", "exa": "x-api-key"}[name]
    expected = f"Bearer {fake.api_key}" if name == "tavily" else fake.api_key
    assert fake.requests[0].headers[header] == expected


@pytest.mark.parametrize("name", ["brave", "tavily", "exa"])
async def test_a_wrong_key_is_unavailable_and_never_named(name, fake_servers, client):
    fake = fake_servers[name]
    failed = await failure_of(backend_for(name, fake, client, api_key="sk-wrong-secret-123"))
    assert failed.code == "unavailable"
    assert "sk-wrong-secret-123" not in failed.message
    assert "401" in failed.message


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(("reply", "code"), [
    (json_reply({"error": "slow down"}, 429), "too_many_requests"),
    (json_reply({"error": "boom"}, 500), "unavailable"),
    (json_reply({"error": "bad query"}, 422), "invalid_tool_input"),
    (json_reply({"error": "Query is too long. Max query length is 400 characters."}, 400), "query_too_long"),
    (Reply(status=200, chunks=[b"<html>not json</html>"], content_type="text/html"), "unavailable"),
    (json_reply([1, 2]), "unavailable"),
])
async def test_provider_failures_map_to_web_search_error_codes(name, reply, code, fake_servers, client):
    fake = fake_servers[name]
    fake.enqueue(reply)
    assert (await failure_of(backend_for(name, fake, client))).code == code


async def test_an_unreachable_backend_is_unavailable(client):
    backend = SearxngBackend(client, f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert (await failure_of(backend)).code == "unavailable"


async def test_a_backend_that_does_not_answer_in_time_is_unavailable(fake_servers, client):
    fake = fake_servers["searxng"]
    fake.enqueue(Reply(delay_first=2.0, chunks=[b"{}"]))
    assert (await failure_of(SearxngBackend(client, fake.url, timeout=0.3))).code == "unavailable"


async def test_searxng_asks_for_json_on_its_search_path(fake_servers, client):
    fake = fake_servers["searxng"]
    await backend_for("searxng", fake, client).search("two words", max_results=3)
    assert fake.requests[0].method == "GET" and fake.requests[0].path == "/search"
    assert "format=json" in fake.requests[0].query


async def test_brave_asks_for_the_count_and_country_and_strips_highlight_markup(fake_servers, client):
    fake = fake_servers["brave"]
    results = await backend_for("brave", fake, client).search("q", max_results=2,
                                                              user_location=UserLocation(country="de"))
    assert "count=2" in fake.requests[0].query and "country=DE" in fake.requests[0].query
    assert len(results) == 2
    fake.reset()
    results = await BraveBackend(client, fake.api_key, base_url=fake.url).search("q", max_results=5)
    assert results[2].snippet == "A sample post."


async def test_tavily_and_exa_receive_the_domain_filters_as_hosts(fake_servers, client):
    await backend_for("tavily", fake_servers["tavily"], client).search(
        "q", max_results=3, allowed_domains=["example.com/news", "*.example.org"])
    body = fake_servers["tavily"].requests[0].json()
    assert body["include_domains"] == ["example.com", "example.org"] and body["max_results"] == 3
    await backend_for("exa", fake_servers["exa"], client).search(
        "q", max_results=4, blocked_domains=["sample.net"], user_location=UserLocation(country="fr"))
    body = fake_servers["exa"].requests[0].json()
    assert body["excludeDomains"] == ["sample.net"] and body["numResults"] == 4 and body["userLocation"] == "FR"


async def test_results_without_a_url_are_skipped(fake_servers, client):
    fake = fake_servers["searxng"]
    fake.results = [FakeResult("", "no url"), FakeResult("https://ok.example/", "ok")]
    results = await backend_for("searxng", fake, client).search("q", max_results=5)
    assert [r.url for r in results] == ["https://ok.example/"]
