"""Endpoints in cooldown are the last resort: tried after every other endpoint of every model (the
fallbacks of `models` included) has failed, never dropped, since a recovered upstream beats a
certain error."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.store.base import create_store
from tests.conftest import TEAM_KEY
from tests.fakes.anthropic import AnthropicFake, error_reply
from tests.fakes.base import wait_for
from tests.gateway_server import GatewayThread
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

PROVIDERS = ("p-one", "p-two", "p-three")


@pytest.fixture(scope="module")
def fakes():
    servers = {name: AnthropicFake().start() for name in PROVIDERS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def gw(fakes, redis_server, tmp_path):  # noqa: F811
    redis_server.flush()
    for fake in fakes.values():
        fake.reset()

    def endpoint(name: str, price: float) -> dict:
        return {"provider": name, "upstream_model": f"{name}-model", "pricing": {"input": price, "output": price}}
    settings = {
        "redis_url": redis_server.url, "usage_spill_path": str(tmp_path / "spill"),
        "providers": {name: {"protocol": "anthropic", "base_url": fake.url, "api_key": f"sk-upstream-{name}"}
                      for name, fake in fakes.items()},
        "models": [{"id": "test/primary", "display_name": "primary", "context_length": 100000, "max_output": 4096,
                    "endpoints": [endpoint("p-one", 1.0), endpoint("p-two", 2.0)]},
                   {"id": "test/fallback", "display_name": "fallback", "context_length": 100000,
                    "max_output": 4096, "endpoints": [endpoint("p-three", 3.0)]}],
        "keys": [{"key": TEAM_KEY, "team": "team-a"}],
        "retries": {"per_endpoint": 1},
    }
    with GatewayThread(**settings) as running:
        async def cool_p_one():
            store = create_store(redis_server.url)
            try:
                await store.set_cooldown("p-one/p-one-model", time.time() + 300, "529")
            finally:
                await store.close()
        asyncio.run(cool_p_one())
        assert wait_for(lambda: running.gateway.routing.view.health("p-one/p-one-model").cooldown_until, timeout=3)
        yield running


def ask(gw) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, timeout=20,
                      json={"model": "test/primary", "models": ["test/fallback"], "max_tokens": 5,
                            "provider": {"sort": "price"}, "messages": [{"role": "user", "content": "hi"}]})


def test_a_cooling_endpoint_serves_when_every_other_endpoint_of_every_model_failed(gw, fakes):
    fakes["p-two"].enqueue(error_reply(503, "api_error", "down"))
    fakes["p-three"].enqueue(error_reply(503, "api_error", "down"))
    response = ask(gw)
    assert response.status_code == 200 and response.json()["provider"] == "p-one"
    assert response.headers["x-gateway-attempts"] == \
        "p-two/test/primary=503,p-three/test/fallback=503,p-one/test/primary=ok"


def test_a_fallback_models_healthy_endpoint_goes_before_the_primarys_cooling_one(gw, fakes):
    fakes["p-two"].enqueue(error_reply(503, "api_error", "down"))
    response = ask(gw)
    assert response.status_code == 200 and response.json()["provider"] == "p-three"
    assert response.json()["model"] == "test/fallback"
    assert fakes["p-one"].requests == []


def test_a_healthy_endpoint_serves_and_the_cooling_one_is_not_called(gw, fakes):
    response = ask(gw)
    assert response.status_code == 200 and response.json()["provider"] == "p-two"
    assert fakes["p-one"].requests == []
