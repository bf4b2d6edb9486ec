"""Cooldowns seen in the shared store escalate by failure episode: a burst of concurrent failures
opens one cooldown of the first step, and only a failed trial after it doubles it. Real Redis, a
real gateway, a real failing upstream."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from gateway.store.base import create_store
from tests.conftest import TEAM_KEY
from tests.fakes.anthropic import AnthropicFake, error_reply, json_reply, message_body
from tests.fakes.base import Reply, wait_for
from tests.gateway_server import GatewayThread
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

ENDPOINT = "p-one/p-one-model"


@pytest.fixture
def fake():
    with AnthropicFake() as server:
        yield server


def start(fake, redis_url: str, tmp_path, seconds: float) -> GatewayThread:
    return GatewayThread(**{
        "redis_url": redis_url, "usage_spill_path": str(tmp_path / "spill"),
        "providers": {"p-one": {"protocol": "anthropic", "base_url": fake.url, "api_key": "sk-upstream-one"}},
        "models": [{"id": "test/cooling", "display_name": "cooling", "context_length": 100000, "max_output": 4096,
                    "endpoints": [{"provider": "p-one", "upstream_model": "p-one-model",
                                   "pricing": {"input": 1.0, "output": 5.0}}]}],
        "keys": [{"key": TEAM_KEY, "team": "team-a"}],
        "retries": {"per_endpoint": 2, "backoff_base": 0.001, "backoff_max": 0.002},
        "cooldowns": {"failures": 3, "seconds": seconds, "max_seconds": 300},
    })


def ask(gw) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, timeout=20,
                      json={"model": "test/cooling", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})


def cooldown(redis_url: str):
    async def read():
        store = create_store(redis_url)
        try:
            return (await store.routing_snapshot()).cooldowns.get(ENDPOINT)
        finally:
            await store.close()
    return asyncio.run(read())


def burst(gw, count: int) -> list[int]:
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(ask(gw).status_code)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return statuses


def test_a_burst_of_failures_over_concurrent_requests_opens_one_first_step_cooldown(fake, redis_server, tmp_path):  # noqa: F811
    redis_server.flush()
    fake.default = error_reply(503, "api_error", "down")
    with start(fake, redis_server.url, tmp_path, seconds=30) as gw:
        began = time.time()
        assert burst(gw, 3) == [502, 502, 502]
        assert len(fake.requests) >= 5
        assert wait_for(lambda: cooldown(redis_server.url) is not None, timeout=3)
        time.sleep(0.2)  # every failure's write has landed
        until, reason, *episodes = cooldown(redis_server.url)
        assert until - began <= 30 + 1, f"cooled down for {until - began:.0f} s, not the first step's 30 s"
        assert episodes == [1] and reason == "503"


def test_only_a_failed_trial_after_the_cooldown_doubles_it(fake, redis_server, tmp_path):  # noqa: F811
    redis_server.flush()
    fake.default = error_reply(503, "api_error", "down")
    with start(fake, redis_server.url, tmp_path, seconds=1.0) as gw:
        burst(gw, 3)
        assert wait_for(lambda: cooldown(redis_server.url) is not None, timeout=3)
        first_until = cooldown(redis_server.url)[0]
        assert first_until - time.time() <= 1.0
        time.sleep(max(0.0, first_until - time.time()) + 0.05)
        trial_started = time.time()
        fake.enqueue(Reply(delay_first=0.5, status=503, chunks=[b'{"type":"error","error":{"type":"api_error",'
                                                                  b'"message":"still down"}}']))
        trial = threading.Thread(target=lambda: statuses.append(ask(gw).status_code))
        statuses: list[int] = []
        trial.start()
        # While the trial runs every replica sees the endpoint taken (reason "probe"), not half-open.
        assert wait_for(lambda: cooldown(redis_server.url)[1] == "probe", timeout=0.45)
        trial.join(10)
        assert statuses == [502]  # the trial, half-open: it fails
        assert wait_for(lambda: cooldown(redis_server.url)[0] > first_until, timeout=3)
        time.sleep(0.2)  # every failure's write has landed
        until = cooldown(redis_server.url)[0]
        assert 2.4 <= until - trial_started <= 3.0  # the trial failed after 0.5 s: twice the first step
        assert cooldown(redis_server.url)[2] == 2
        fake.default = json_reply(message_body())
        time.sleep(max(0.0, until - time.time()) + 0.05)
        assert ask(gw).status_code == 200  # a successful trial clears it
        assert wait_for(lambda: cooldown(redis_server.url) is None, timeout=3)
