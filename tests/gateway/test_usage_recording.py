"""One usage record per request, through the Redis buffer into PostgreSQL, with tokens and cost;
the database's totals equal the Redis rollups' to the nano-dollar."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.records import create_record_store
from gateway.records.base import RequestFilter
from gateway.store.base import create_store
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY, base_settings
from tests.fakes.anthropic import error_reply, json_reply, message_body, sse_reply, stream_events
from tests.fakes.base import wait_for
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

HI = {"model": "anthropic/claude-sonnet-4.5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
# anthropic/claude-sonnet-4.5 on anthropic, USD per million tokens
PRICE = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}


def query(url: str, method: str, **kwargs):
    async def run():
        store = create_store(url)
        try:
            return await getattr(store, method)(**kwargs)
        finally:
            await store.close()
    return asyncio.run(run())


def in_database(db_url: str, method: str, *args, **kwargs):
    async def run():
        db = create_record_store(db_url)
        try:
            await db.open(migrate=False)
            return await getattr(db, method)(*args, **kwargs)
        finally:
            await db.close()
    return asyncio.run(run())


def records(db_url: str, team: str, n: int, timeout: float = 5.0) -> list[dict]:
    """The team's records in the database, once there are `n` (and never more)."""
    found: list[dict] = []

    def enough() -> bool:
        # One more than expected, so that a doubled record shows.
        found[:] = in_database(db_url, "requests", RequestFilter(team=team), limit=max(1000, n + 1))[0]
        return len(found) >= n
    assert wait_for(enough, timeout=timeout, interval=0.05), f"expected {n} records, found {len(found)}"
    assert len(found) == n
    return found


@pytest.fixture
def redis_gateway(redis_server, postgres_server, anthropic_upstream, tmp_path):  # noqa: F811
    redis_server.flush()
    postgres_server.reset()
    anthropic_upstream.reset()
    settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                             usage_spill_path=str(tmp_path / "spill.jsonl"), usage_flush_interval=0.05)
    with GatewayThread(**settings) as gw:
        yield gw, postgres_server.url, redis_server.url


def test_a_request_leaves_one_record_with_tokens_cost_and_attribution(redis_gateway, anthropic_upstream):
    gw, url, _ = redis_gateway
    anthropic_upstream.enqueue(json_reply(message_body(input_tokens=1000, output_tokens=100, cache_read=2000,
                                                       cache_write=400)))
    response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY, "x-session-id": "sess-9"},
                          json={**HI, "user": "alice", "trace": {"trace_id": "tr-1", "span_name": "plan",
                                                                 "custom_key": "v"}})
    assert response.status_code == 200
    [record] = records(url, "team-a", 1)
    expected_cost = (1000 * PRICE["input"] + 100 * PRICE["output"] + 400 * PRICE["cache_write"]
                     + 2000 * PRICE["cache_read"]) / 1e6
    assert record["request_id"] == response.headers["request-id"]
    assert record["team"] == "team-a" and record["key_id"].startswith("key_")
    assert TEAM_KEY not in str(record)
    assert record["user"] == "alice" and record["session_id"] == "sess-9"
    assert record["trace"] == {"trace_id": "tr-1", "span_name": "plan", "custom_key": "v"}
    assert record["model_requested"] == "anthropic/claude-sonnet-4.5"
    assert record["model"] == "anthropic/claude-sonnet-4.5" and record["provider"] == "anthropic"
    assert record["status"] == 200 and record["streamed"] is False
    assert (record["input_tokens"], record["output_tokens"]) == (1000, 100)
    assert (record["cache_creation_input_tokens"], record["cache_read_input_tokens"]) == (400, 2000)
    assert record["cost_usd"] == pytest.approx(expected_cost)
    assert response.json()["usage"]["cost"] == pytest.approx(expected_cost)
    assert record["latency_ms"] > 0 and record["ttft_ms"] is not None


def test_uncached_request_costs_input_and_output_prices(redis_gateway, anthropic_upstream):
    gw, url, _ = redis_gateway
    anthropic_upstream.enqueue(json_reply(message_body(input_tokens=2000, output_tokens=300)))
    httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=HI)
    [record] = records(url, "team-a", 1)
    assert record["cost_usd"] == pytest.approx((2000 * 3.0 + 300 * 15.0) / 1e6)


def test_database_totals_equal_the_rollups_and_the_records(redis_gateway, anthropic_upstream):
    gw, url, redis_url = redis_gateway
    for i in range(12):
        anthropic_upstream.enqueue(json_reply(message_body(input_tokens=100 + i, output_tokens=10 + i,
                                                           cache_read=i * 7)))
        key = TEAM_KEY if i % 3 else OTHER_TEAM_KEY
        assert httpx.post(gw.url + "/v1/messages", headers={"x-api-key": key}, json=HI).status_code == 200
    mine = records(url, "team-a", 8)
    theirs = records(url, "team-b", 4)
    # Whole hours, as the rollups count: then both must agree to the nano-dollar.
    start = (time.time() // 3600 - 1) * 3600
    end = start + 3 * 3600
    rollups = query(redis_url, "query_usage", start=start, end=end, group_by=["team", "model"], team=None)
    database = in_database(url, "summary", start, end, ["team", "model"])
    assert database == rollups
    by_team = {row["team"]: row for row in database}
    for team, recs in (("team-a", mine), ("team-b", theirs)):
        row = by_team[team]
        assert row["requests"] == len(recs)
        for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            assert row[field] == sum(r[field] for r in recs)
        assert row["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in recs))


def test_upstream_failure_is_recorded_with_its_attempts(redis_gateway, anthropic_upstream):
    gw, url, _ = redis_gateway
    anthropic_upstream.enqueue(error_reply(500, "api_error", "boom"))
    assert httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=HI).status_code == 502
    [record] = records(url, "team-a", 1)
    assert record["status"] == 502 and record["cost_usd"] == 0
    assert record["attempts"][0]["outcome"] == "500"


def test_client_disconnect_mid_stream_still_produces_a_record(redis_gateway, anthropic_upstream):
    gw, url, _ = redis_gateway
    anthropic_upstream.enqueue(sse_reply(stream_events(["word "] * 60, input_tokens=321), delay_between=0.05))
    with httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY}) as client:
        with client.stream("POST", "/v1/messages", json={**HI, "stream": True}) as r:
            seen = b""
            for chunk in r.iter_raw():
                seen += chunk
                if seen.count(b"content_block_delta") >= 3:
                    break
    [record] = records(url, "team-a", 1)
    assert record["status"] == 499
    assert record["streamed"] is True
    assert record["input_tokens"] == 321
    assert record["output_tokens"] >= 1 and record["estimated"] is True
    # This request's answer was cut: the gateway hung up on the upstream too. (A handler left over
    # from an earlier test may count a disconnect of its own, so the request itself is checked.)
    [request] = [r for r in anthropic_upstream.requests if r.path == "/v1/messages"]
    assert wait_for(lambda: any(cut is request for cut in anthropic_upstream.cut), timeout=3)
