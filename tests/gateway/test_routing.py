"""Routing with three real upstreams on loopback: preferences, fallbacks, retries and cooldowns."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from gateway.store.base import create_store
from tests.conftest import TEAM_KEY
from tests.fakes.anthropic import AnthropicFake, error_reply, json_reply, message_body, sse_reply, stream_events
from tests.fakes.base import free_port, wait_for
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

PROVIDERS = ("p-one", "p-two", "p-three")


def endpoint(provider: str, price: float, **extra) -> dict:
    return {"provider": provider, "upstream_model": f"{provider}-model",
            "pricing": {"input": price, "output": price * 5}, **extra}


def routing_settings(fakes: dict[str, AnthropicFake], **extra) -> dict:
    settings = {
        "providers": {name: {"protocol": "anthropic", "base_url": fake.url, "api_key": f"sk-upstream-{name}"}
                      for name, fake in fakes.items()},
        "models": [
            {"id": "test/router", "display_name": "Router test", "context_length": 100000, "max_output": 4096,
             "supported_parameters": ["tools", "temperature"],
             "endpoints": [
                 endpoint("p-one", 1.0, retains_prompts=True),
                 endpoint("p-two", 3.0, supported_parameters=["tools", "temperature", "top_k"]),
                 endpoint("p-three", 2.0, zdr=True, quantization="fp8")]},
            {"id": "test/backup", "display_name": "Backup", "context_length": 100000, "max_output": 4096,
             "endpoints": [endpoint("p-three", 0.5)]},
        ],
        "keys": [{"key": TEAM_KEY, "team": "team-a"}],
        "retries": {"per_endpoint": 1, "backoff_base": 0.01, "backoff_max": 0.05},
    }
    settings.update(extra)
    return settings


@pytest.fixture(scope="module")
def fakes():
    servers = {name: AnthropicFake().start() for name in PROVIDERS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gw(fakes):
    with GatewayThread(**routing_settings(fakes)) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(fakes):
    for fake in fakes.values():
        fake.reset()


def ask(gw, **body) -> httpx.Response:
    payload = {"model": "test/router", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=payload, timeout=20)


def calls(fakes) -> dict[str, int]:
    return {name: len(fake.requests) for name, fake in fakes.items()}


def test_order_is_honoured(gw, fakes):
    response = ask(gw, provider={"order": ["p-three", "p-one"]})
    assert response.status_code == 200
    assert response.json()["provider"] == "p-three"
    assert response.headers["x-gateway-provider"] == "p-three"
    assert fakes["p-three"].requests[-1].json()["model"] == "p-three-model"
    assert fakes["p-three"].requests[-1].headers["x-api-key"] == "sk-upstream-p-three"


def test_order_falls_back_to_the_next_provider_and_says_so(gw, fakes):
    fakes["p-two"].enqueue(error_reply(503, "api_error", "down"))
    response = ask(gw, provider={"order": ["p-two", "p-one"]})
    assert response.status_code == 200
    assert response.json()["provider"] == "p-one"
    assert response.headers["x-gateway-attempts"] == "p-two/test/router=503,p-one/test/router=ok"


def test_allow_fallbacks_false_stops_at_the_ordered_providers(gw, fakes):
    fakes["p-two"].enqueue(error_reply(503, "api_error", "down"))
    response = ask(gw, provider={"order": ["p-two"], "allow_fallbacks": False})
    assert response.status_code == 502
    assert calls(fakes) == {"p-one": 0, "p-two": 1, "p-three": 0}


def test_only_keeps_the_named_providers(gw, fakes):
    for _ in range(5):
        assert ask(gw, provider={"only": ["P-Two"]}).json()["provider"] == "p-two"
    assert calls(fakes)["p-two"] == 5


def test_ignore_drops_providers(gw, fakes):
    for _ in range(5):
        assert ask(gw, provider={"ignore": ["p-one", "p-three"]}).json()["provider"] == "p-two"


def test_max_price_excludes_dearer_endpoints(gw, fakes):
    for _ in range(5):
        assert ask(gw, provider={"max_price": {"prompt": 1.5}}).json()["provider"] == "p-one"


def test_max_price_that_excludes_everything_names_the_filter(gw, fakes):
    response = ask(gw, provider={"max_price": {"prompt": 0.1}})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert "max_price" in response.json()["error"]["message"]


def test_require_parameters_keeps_endpoints_supporting_every_parameter(gw, fakes):
    for _ in range(3):
        response = ask(gw, top_k=5, provider={"require_parameters": True})
        assert response.json()["provider"] == "p-two"


def test_data_collection_deny_drops_endpoints_that_retain_prompts(gw, fakes):
    providers = {ask(gw, provider={"data_collection": "deny", "sort": "price"}).json()["provider"] for _ in range(3)}
    assert providers == {"p-three"}


def test_zdr_and_quantizations_filter(gw, fakes):
    assert ask(gw, provider={"zdr": True}).json()["provider"] == "p-three"
    assert ask(gw, provider={"quantizations": ["fp8"]}).json()["provider"] == "p-three"


def test_sort_by_price_reorders(gw, fakes):
    fakes["p-one"].enqueue(error_reply(500, "api_error", "down"))
    response = ask(gw, provider={"sort": "price"})
    assert response.headers["x-gateway-attempts"] == "p-one/test/router=500,p-three/test/router=ok"


def test_floor_suffix_sorts_by_price(gw, fakes):
    for _ in range(3):
        assert ask(gw, model="test/router:floor").json()["provider"] == "p-one"


def test_default_load_balancing_favours_the_cheapest(gw, fakes):
    served = [ask(gw).json()["provider"] for _ in range(40)]
    # weights 1/price²: p-one 1/36, p-three 1/144, p-two 1/324 of (input+output) → ~74 %, 18 %, 8 %
    assert served.count("p-one") > served.count("p-three") > 0
    assert served.count("p-one") >= 20


def test_invalid_preferences_are_a_client_error(gw, fakes):
    response = ask(gw, provider={"sort": "fastest"})
    assert response.status_code == 400
    assert "provider.sort" in response.json()["error"]["message"]


def test_model_fallback_serves_and_names_the_fallback(gw, fakes):
    for name in ("p-one", "p-two", "p-three"):
        fakes[name].enqueue(error_reply(529, "overloaded_error", "busy"))
    response = ask(gw, models=["test/backup"], provider={"sort": "price"})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "test/backup" and body["provider"] == "p-three"
    assert response.headers["x-gateway-attempts"].endswith("p-three/test/backup=ok")
    assert fakes["p-three"].requests[-1].json()["model"] == "p-three-model"


def test_context_length_error_skips_to_the_next_model(gw, fakes):
    fakes["p-one"].enqueue(error_reply(400, "invalid_request_error", "prompt is too long: 200000 tokens > 100000"))
    response = ask(gw, models=["test/backup"], provider={"sort": "price"})
    assert response.status_code == 200
    assert response.json()["model"] == "test/backup"
    assert calls(fakes)["p-two"] == 0  # the same model elsewhere would refuse the same prompt


def test_client_error_is_not_retried_nor_fallen_back(gw, fakes):
    fakes["p-one"].enqueue(error_reply(400, "invalid_request_error", "messages.0: bad"))
    response = ask(gw, models=["test/backup"], provider={"sort": "price"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "messages.0: bad"
    assert sum(calls(fakes).values()) == 1


def test_mid_stream_failure_is_not_retried(gw, fakes):
    fakes["p-one"].enqueue(sse_reply(stream_events(["a", "b", "c"])[:4], cut=True))
    response = ask(gw, stream=True, provider={"sort": "price"})
    assert response.status_code == 200
    assert response.content.strip().split(b"\n\n")[-1].startswith(b"event: error")
    assert sum(calls(fakes).values()) == 1


def test_error_after_retries_and_fallbacks_tells_sdks_not_to_retry(gw, fakes):
    for name in PROVIDERS:
        fakes[name].enqueue(error_reply(503, "api_error", "down"))
    response = ask(gw, provider={"sort": "price"})
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert sum(calls(fakes).values()) == 3


def test_transient_failure_is_retried_on_the_same_endpoint(fakes):
    settings = routing_settings(fakes, retries={"per_endpoint": 3, "backoff_base": 0.01, "backoff_max": 0.02})
    with GatewayThread(**settings) as gw:
        fakes["p-one"].enqueue(error_reply(503, "api_error", "blip"), error_reply(502, "api_error", "blip"))
        response = ask(gw, provider={"order": ["p-one"], "allow_fallbacks": False})
        assert response.status_code == 200
        assert response.headers["x-gateway-attempts"] == \
            "p-one/test/router=503,p-one/test/router=502,p-one/test/router=ok"


def test_per_request_deadline_bounds_everything(fakes):
    settings = routing_settings(fakes, timeouts={"total": 0.5, "first_byte": 5})
    with GatewayThread(**settings) as gw:
        from tests.fakes.base import Reply
        fakes["p-one"].enqueue(Reply(delay_first=3, chunks=[b"{}"]))
        started = time.monotonic()
        response = ask(gw, provider={"order": ["p-one"]})
        assert time.monotonic() - started < 2
        assert response.status_code == 504


def test_a_429_with_retry_after_cools_the_endpoint_down_for_another_gateway_process(fakes, redis_server,  # noqa: F811
                                                                                   postgres_server, tmp_path):  # noqa: F811
    redis_server.flush()
    config = routing_settings(fakes, redis_url=redis_server.url, usage_db_url=postgres_server.database("routing"))
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {**os.environ, "GATEWAY_CONFIG": str(config_file), "GATEWAY_USAGE_SPILL_PATH": str(tmp_path / "spill")}
    other = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _up(port), timeout=20)
        with GatewayThread(**config) as first:
            fakes["p-one"].enqueue(error_reply(429, "rate_limit_error", "slow down", {"retry-after": "30"}))
            response = ask(first, provider={"sort": "price"})
            assert response.status_code == 200 and response.json()["provider"] == "p-three"

            async def cooldowns():
                store = create_store(redis_server.url)
                try:
                    return (await store.routing_snapshot()).cooldowns
                finally:
                    await store.close()
            assert wait_for(lambda: "p-one/p-one-model" in asyncio.run(cooldowns()), timeout=3)
        time.sleep(1.2)  # the other process refreshes its snapshot every second
        before = len(fakes["p-one"].requests)
        for _ in range(5):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", headers={"x-api-key": TEAM_KEY}, timeout=10,
                           json={"model": "test/router", "max_tokens": 5, "provider": {"sort": "price"},
                                 "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200 and r.json()["provider"] == "p-three"
        assert len(fakes["p-one"].requests) == before, "the cooling endpoint was skipped"
    finally:
        other.terminate()
        other.wait(10)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _snapshot(url: str):
    async def run():
        store = create_store(url)
        try:
            return await store.routing_snapshot()
        finally:
            await store.close()
    return asyncio.run(run())


def test_upstream_rate_limit_headers_are_recorded_and_nearly_exhausted_providers_go_later(
        fakes, redis_server, tmp_path):  # noqa: F811
    redis_server.flush()
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
    headers = {"anthropic-ratelimit-requests-limit": "1000", "anthropic-ratelimit-requests-remaining": "3",
               "anthropic-ratelimit-requests-reset": reset}
    with GatewayThread(**routing_settings(fakes, redis_url=redis_server.url,
                                          usage_spill_path=str(tmp_path / "s"))) as gw:
        fakes["p-one"].enqueue(json_reply(message_body(), headers=headers))
        assert ask(gw, provider={"sort": "price"}).json()["provider"] == "p-one"
        assert wait_for(lambda: "p-one" in _snapshot(redis_server.url).ratelimits, timeout=3)
        limits = _snapshot(redis_server.url).ratelimits["p-one"]
        assert limits["requests_remaining"] == 3 and limits["requests_limit"] == 1000
        time.sleep(1.2)
        assert ask(gw, provider={"sort": "price"}).json()["provider"] == "p-three"


def test_measured_throughput_and_latency_drive_sort(fakes, redis_server, tmp_path):  # noqa: F811
    redis_server.flush()

    async def seed():
        store = create_store(redis_server.url)
        try:
            now = time.time()
            await store.record_endpoint_stats("p-one/p-one-model", 2.0, 20.0, True, now)
            await store.record_endpoint_stats("p-two/p-two-model", 0.2, 150.0, True, now)
            await store.record_endpoint_stats("p-three/p-three-model", 0.1, 60.0, True, now)
        finally:
            await store.close()
    asyncio.run(seed())
    with GatewayThread(**routing_settings(fakes, redis_url=redis_server.url,
                                          usage_spill_path=str(tmp_path / "s"))) as gw:
        assert wait_for(lambda: gw.gateway.routing.view.health("p-two/p-two-model").samples > 0, timeout=3)
        assert ask(gw, provider={"sort": "throughput"}).json()["provider"] == "p-two"
        assert ask(gw, model="test/router:nitro").json()["provider"] == "p-two"
        assert ask(gw, provider={"sort": "latency"}).json()["provider"] == "p-three"
        assert ask(gw, provider={"sort": "price", "preferred_min_throughput": 50}).json()["provider"] == "p-three"
