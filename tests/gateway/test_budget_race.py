"""The budget race: hundreds of concurrent JSON and streamed requests through two gateway
processes sharing one Redis, some cut mid-stream, some with images by URL whose size only the
upstream knows. The spend recorded must never pass the budget and must equal what the upstream
billed, request for request: the reservation bounds every request, so no answer needs cutting.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from gateway.records.base import RequestFilter
from gateway.store.keys import TeamKeys
from policies.limits import day_id, usd_to_nanos
from tests.fakes.billing import BillingFake
from tests.gateway.replicas import Replicas
from tests.gateway.test_usage_recording import in_database
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

ADMIN_KEY = "sk-test-race-admin-0000"
MODEL = "test/billed"
INPUT_NANOS, OUTPUT_NANOS = 1_000, 10_000  # per token: $1 and $10 per million
BUDGET_USD = 0.05
MAX_TOKENS = 50
IMAGE = {"type": "image", "source": {"type": "url", "url": "https://images.example/cat.png"}}


@pytest.fixture(scope="module")
def fake() -> Iterator[BillingFake]:
    with BillingFake() as server:
        yield server


@pytest.fixture(scope="module")
def replicas(fake, redis_server, postgres_server, tmp_path_factory) -> Iterator[Replicas]:  # noqa: F811
    redis_server.flush()
    config = {
        "admin_key": ADMIN_KEY, "redis_url": redis_server.url, "usage_db_url": postgres_server.database("race"),
        "usage_flush_interval": 0.1,
        "providers": {"anthropic": {"base_url": fake.url, "api_key": "sk-upstream-race"}},
        "models": [{"id": MODEL, "display_name": MODEL, "context_length": 100_000, "max_output": 4096,
                    "endpoints": [{"provider": "anthropic", "upstream_model": "billed-model",
                                   "pricing": {"input": 1.0, "output": 10.0}}]}],
        "retries": {"per_endpoint": 1},
        "key_cache_ttl": 60.0,
    }
    with Replicas(config, tmp_path_factory.mktemp("race"), count=2, admin_key=ADMIN_KEY) as started:
        yield started


def body(i: int) -> dict:
    kind = i % 4
    text = f"question {i}" + (" cut:7" if kind == 2 else "")
    content = [IMAGE, {"type": "text", "text": text}] if kind == 3 else text
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": kind in (1, 2),
            "messages": [{"role": "user", "content": content}]}


def race(urls: list[str], key: str, count: int) -> list[tuple[int, bytes]]:
    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, bytes]:
        response = await client.post(urls[i % len(urls)] + "/v1/messages", headers={"x-api-key": key}, json=body(i))
        return response.status_code, response.content

    async def run() -> list[tuple[int, bytes]]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(count)))
    return asyncio.run(run())


def test_concurrent_spend_never_passes_the_budget_and_equals_what_the_upstream_billed(fake, replicas,
                                                                                      redis_server):  # noqa: F811
    fake.reset()
    team = f"team-{uuid.uuid4().hex[:12]}"
    replicas.create_team(team, budget_daily_usd=BUDGET_USD)
    key = replicas.create_key(team)["key"]
    count = 320
    answers = race(replicas.urls, key, count)

    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) > 0, "the budget bound the race"
    cut = [content for status, content in answers if status == 200 and b"event: error" in content]
    assert cut, "some streams were cut by the upstream"
    assert all(b"budget" not in content for content in cut), "no answer passed its reservation"

    replicas.wait_recorded(team, count, timeout=20)
    client = redis.Redis.from_url(redis_server.url)
    tk = TeamKeys(team)
    # Every reservation is settled (recorded implies settled), so the spend is final.
    assert int(client.hget(tk.reserved, "team") or 0) == 0
    spent = int(client.hget(tk.spend_day(day_id(time.time())), "team") or 0)
    billed = sum(i * INPUT_NANOS + o * OUTPUT_NANOS for i, o in fake.bills.values())
    assert len(fake.bills) == statuses.count(200)
    assert spent == billed
    records, _ = in_database(replicas.config["usage_db_url"], "requests", RequestFilter(team=team), limit=10_000)
    assert len(records) == count and len({r["request_id"] for r in records}) == count, "each recorded once"
    assert sum(usd_to_nanos(r["cost_usd"]) for r in records) == billed, "the usage records say the same"
    assert billed <= usd_to_nanos(BUDGET_USD)
    assert billed > usd_to_nanos(BUDGET_USD) * 0.5, "the budget was mostly used"
    assert any(r.path.endswith("/count_tokens") for r in fake.requests), "images by URL were counted upstream"
