"""`model_map` (and its synonym `aliases`): Claude Code's native ids, dated ones included, served by
any router id, per team where the team says so."""
from __future__ import annotations

import httpx
import pytest

from gateway.reload import build_serving
from gateway.settings import Settings
from policies.catalog import CatalogError
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY
from tests.fakes.openai import OpenAIFake
from tests.gateway_server import GatewayThread


@pytest.fixture(scope="module")
def local():
    with OpenAIFake() as fake:
        yield fake


def mapped_config(url: str, **extra) -> dict:
    return {"providers": {"local": {"protocol": "openai", "base_url": url + "/v1"}},
            "models": [{"id": "local/coder", "endpoints": [{"provider": "local", "upstream_model": "coder-32b"}]},
                       {"id": "local/small", "endpoints": [{"provider": "local", "upstream_model": "small-3b"}]}],
            "keys": [{"key": TEAM_KEY, "team": "team-a"}, {"key": OTHER_TEAM_KEY, "team": "team-b"}], **extra}


def served(gw, model: str, key: str = TEAM_KEY) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages", headers={"x-api-key": key}, json={
        "model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})


def test_native_and_dated_ids_go_where_model_map_sends_them(local):
    config = mapped_config(local.url, model_map={"claude-opus-4-8": "local/coder", "claude-haiku-4-5": "local/small"})
    with GatewayThread(**config) as gw:
        for asked, model, upstream in (("claude-opus-4-8", "local/coder", "coder-32b"),
                                       ("Claude-Opus-4-8", "local/coder", "coder-32b"),
                                       ("claude-haiku-4-5-20251001", "local/small", "small-3b"),
                                       ("claude-opus-4-8:nitro", "local/coder", "coder-32b")):
            answer = served(gw, asked)
            assert answer.status_code == 200, (asked, answer.text)
            assert answer.json()["model"] == model
            assert local.chat_requests[-1]["model"] == upstream
        # A name the map does not list resolves as before (here: no provider serves it).
        assert served(gw, "claude-sonnet-4-6").status_code == 404


def test_aliases_is_a_synonym_and_a_team_map_overrides_the_top_level_one(local):
    config = mapped_config(local.url, aliases={"claude-opus-4-8": "local/coder"},
                           teams=[{"name": "team-b", "model_map": {"claude-opus-4-8": "local/small"}}])
    with GatewayThread(**config) as gw:
        assert served(gw, "claude-opus-4-8").json()["model"] == "local/coder"
        assert served(gw, "claude-opus-4-8", OTHER_TEAM_KEY).json()["model"] == "local/small"


def test_a_map_to_a_model_nobody_serves_stops_startup_naming_it(local):
    with pytest.raises(CatalogError, match=r"model_map: 'claude-opus-4-8' maps to 'local/nope'"):
        build_serving(Settings(**mapped_config(local.url, model_map={"claude-opus-4-8": "local/nope"})))
    with pytest.raises(CatalogError, match=r"teams\[team-b\].model_map: 'x' maps to 'anthropic/claude-opus-4.8', "
                                           r"which no configured provider serves"):
        build_serving(Settings(**mapped_config(local.url, teams=[
            {"name": "team-b", "model_map": {"x": "anthropic/claude-opus-4.8"}}])))
    with pytest.raises(CatalogError, match="map 'claude-opus-4-8' to two different models"):
        build_serving(Settings(**mapped_config(local.url, model_map={"claude-opus-4-8": "local/coder"},
                                               aliases={"claude-opus-4-8": "local/small"})))
