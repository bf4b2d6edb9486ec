"""The `search:` block and a team's override of it."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.search.settings import SearchSettings, merge_search


def test_defaults_follow_the_documented_names():
    s = SearchSettings()
    assert (s.max_uses, s.cache_ttl, s.price_per_search, s.enabled) == (5, 300.0, 0.01, True)
    assert s.resolved_backend is None


def test_searxng_is_the_backend_when_its_url_is_set():
    assert SearchSettings(searxng_url="http://searx:8080/").resolved_backend == "searxng"
    assert SearchSettings(searxng_url="http://searx:8080/").searxng_url == "http://searx:8080"


@pytest.mark.parametrize(("config", "named"), [
    ({"backend": "brave"}, "api_key"),
    ({"backend": "searxng"}, "searxng_url"),
    ({"backend": "bing", "api_key": "k"}, "backend"),
    ({"searxng_url": "searx:8080"}, "searxng_url"),
    ({"max_uses": 0}, "max_uses"),
    ({"blocked_domains": ["https://x.com"]}, "blocked_domains"),
    ({"surprise": 1}, "surprise"),
    ({"token_secret": "short"}, "token_secret"),
])
def test_an_unusable_search_block_is_refused_naming_the_field(config, named):
    with pytest.raises(ValidationError) as error:
        SearchSettings(**config)
    assert named in str(error.value)


def test_a_keyed_backend_never_shows_its_key():
    s = SearchSettings(backend="exa", api_key="exa-secret-key")
    assert "exa-secret-key" not in repr(s) and "exa-secret-key" not in str(s.model_dump())


def test_a_team_override_replaces_fields_and_adds_to_the_blocked_domains():
    base = SearchSettings(searxng_url="http://searx:8080", blocked_domains=["bad.example"], max_uses=5)
    team = merge_search(base, {"max_uses": 2, "blocked_domains": ["worse.example"], "price_per_search": 0})
    assert team.max_uses == 2 and team.price_per_search == 0
    assert team.blocked_domains == ["bad.example", "worse.example"]
    assert team.resolved_backend == "searxng"
    assert merge_search(base, {"enabled": False}).resolved_backend is None


def test_a_team_switching_to_a_keyed_backend_brings_its_key():
    base = SearchSettings(searxng_url="http://searx:8080", token_secret="s" * 32)
    team = merge_search(base, {"backend": "tavily", "api_key": "tvly-team"})
    assert team.api_key.get_secret_value() == "tvly-team" and team.token_secret == base.token_secret
    with pytest.raises(ValidationError):
        merge_search(base, {"backend": "tavily"})
    with pytest.raises(ValidationError):
        merge_search(base, {"cache_tll": 5})


def test_tokens_are_signed_with_the_configured_secret_or_one_per_process():
    assert SearchSettings(token_secret="t" * 32).secret() == b"t" * 32
    assert SearchSettings().secret() == SearchSettings().secret() and len(SearchSettings().secret()) == 32
