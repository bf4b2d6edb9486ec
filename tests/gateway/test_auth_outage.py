"""Redis down: keys made through the admin API keep working from the cache under fail_open, any key
the gateway cannot vouch for gets 529 (never 401, never a 500), and what was served is counted."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY, TEAM_KEY, base_settings
from tests.fakes.base import wait_for
from tests.gateway.test_store_outage import DurableRedis
from tests.gateway.test_usage_recording import records
from tests.gateway_server import GatewayThread
from tests.postgres_server import PostgresServer, postgres_server  # noqa: F401  (session fixture)

COUNT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
ASK = {**COUNT, "max_tokens": 5}
CACHE_TTL_S = 0.2
UNKNOWN_KEY = "sk-gw-never-issued-by-this-gateway-000000000"


@pytest.fixture
def redis() -> Iterator[DurableRedis]:
    with DurableRedis() as server:
        yield server


@pytest.fixture
def usage_db(postgres_server: PostgresServer) -> str:  # noqa: F811
    postgres_server.reset()
    return postgres_server.url


def start_gateway(upstream, redis: DurableRedis, usage_db: str, tmp_path, **extra) -> GatewayThread:
    settings = base_settings(upstream.url, redis_url=redis.url, usage_db_url=usage_db, key_cache_ttl=CACHE_TTL_S,
                             usage_spill_path=str(tmp_path / "spill.jsonl"), **extra)
    return GatewayThread(**settings).start()


def issue_key(gw: GatewayThread) -> tuple[str, dict]:
    team = "out-" + uuid.uuid4().hex[:8]
    admin = {"x-api-key": ADMIN_KEY}
    assert httpx.post(gw.url + "/admin/teams", json={"name": team}, headers=admin).status_code == 201
    created = httpx.post(gw.url + f"/admin/teams/{team}/keys", json={}, headers=admin)
    assert created.status_code == 201, created.text
    return team, created.json()


def call(gw: GatewayThread, secret: str) -> dict[str, httpx.Response]:
    with httpx.Client(base_url=gw.url, headers={"x-api-key": secret}, timeout=10) as c:
        return {"messages": c.post("/v1/messages", json=ASK),
                "count_tokens": c.post("/v1/messages/count_tokens", json=COUNT),
                "models": c.get("/v1/models")}


def statuses(answers: dict[str, httpx.Response]) -> dict[str, int]:
    return {route: r.status_code for route, r in answers.items()}


def all_are(status: int) -> dict[str, int]:
    return dict.fromkeys(("messages", "count_tokens", "models"), status)


def assert_overloaded(answers: dict[str, httpx.Response]) -> None:
    for route, response in answers.items():
        assert response.status_code == 529, (route, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["type"] == "overloaded_error"
        assert response.headers["request-id"].startswith("req_")


def requests_counted(gw: GatewayThread, team: str, status: int) -> float:
    """gateway_requests_total summed over the team's series with this status, read from /metrics."""
    total = 0.0
    for line in httpx.get(gw.url + "/metrics").text.splitlines():
        if line.startswith("gateway_requests_total{") and f'team="{team}"' in line \
                and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_fail_open_keeps_a_recently_seen_admin_key_working_and_counts_its_requests(upstream, redis, usage_db, tmp_path):
    gw = start_gateway(upstream, redis, usage_db, tmp_path, store_outage="fail_open")
    try:
        team, key = issue_key(gw)
        assert statuses(call(gw, key["key"])) == all_are(200)
        redis.stop()
        time.sleep(CACHE_TTL_S * 2)  # past the cache's own lifetime: only the grace window is left
        during = call(gw, key["key"])
        assert statuses(during) == all_are(200)
        assert statuses(call(gw, TEAM_KEY)) == all_are(200), "the config file's keys need no store"
        assert wait_for(lambda: requests_counted(gw, team, 200) == 4, timeout=3)  # two messages, two counts
        redis.start()
        # The recorder replays its spill file when a request next finishes.
        assert httpx.post(gw.url + "/v1/messages", json=ASK, headers={"x-api-key": TEAM_KEY}).status_code == 200
        found = records(usage_db, team, 4, timeout=15)
        ids = {r["request_id"] for r in found}
        assert {during["messages"].headers["request-id"], during["count_tokens"].headers["request-id"]} <= ids
    finally:
        gw.stop()


def test_fail_open_answers_overloaded_for_a_key_it_has_not_seen(upstream, redis, usage_db, tmp_path):
    gw = start_gateway(upstream, redis, usage_db, tmp_path, store_outage="fail_open")
    try:
        _, key = issue_key(gw)  # valid, but never used on this replica
        redis.stop()
        assert_overloaded(call(gw, key["key"]))
        assert_overloaded(call(gw, UNKNOWN_KEY))
    finally:
        gw.stop()


def test_fail_open_grace_ends_after_key_cache_grace(upstream, redis, usage_db, tmp_path):
    gw = start_gateway(upstream, redis, usage_db, tmp_path, store_outage="fail_open", key_cache_grace=0.3)
    try:
        _, key = issue_key(gw)
        assert statuses(call(gw, key["key"])) == all_are(200)
        redis.stop()
        time.sleep(CACHE_TTL_S + 0.4)
        assert_overloaded(call(gw, key["key"]))
    finally:
        gw.stop()


def test_fail_open_still_refuses_a_key_seen_revoked(upstream, redis, usage_db, tmp_path):
    gw = start_gateway(upstream, redis, usage_db, tmp_path, store_outage="fail_open")
    try:
        _, key = issue_key(gw)
        assert httpx.delete(gw.url + f"/admin/keys/{key['id']}", headers={"x-api-key": ADMIN_KEY}).status_code == 200
        assert statuses(call(gw, key["key"])) == all_are(401)
        redis.stop()
        time.sleep(CACHE_TTL_S * 2)
        assert statuses(call(gw, key["key"])) == all_are(401)
    finally:
        gw.stop()


def test_fail_closed_answers_overloaded_for_every_store_key_and_records_the_refusals(upstream, redis, usage_db, tmp_path):
    gw = start_gateway(upstream, redis, usage_db, tmp_path, store_outage="fail_closed")
    try:
        team, key = issue_key(gw)
        assert statuses(call(gw, key["key"])) == all_are(200)
        redis.stop()
        time.sleep(CACHE_TTL_S * 2)
        refused = call(gw, key["key"])
        assert_overloaded(refused)
        assert_overloaded(call(gw, UNKNOWN_KEY))
        # The message and the count (usage and metrics count the routes that are admitted).
        assert wait_for(lambda: requests_counted(gw, team, 529) == 2, timeout=3)
        redis.start()
        assert httpx.post(gw.url + "/v1/messages", json=ASK, headers={"x-api-key": TEAM_KEY}).status_code == 200
        found = {r["request_id"]: r for r in records(usage_db, team, 4, timeout=15)}
        for route in ("messages", "count_tokens"):
            assert found[refused[route].headers["request-id"]]["status"] == 529
        deadline = time.monotonic() + 10
        while statuses(call(gw, key["key"])) != all_are(200):
            assert time.monotonic() < deadline, "the key works again once the store is back"
            time.sleep(0.1)
    finally:
        gw.stop()


def test_fail_open_serves_a_seen_key_and_refuses_an_unseen_one_quickly_while_redis_hangs(upstream, redis, usage_db, tmp_path):
    gw = start_gateway(upstream, redis, usage_db, tmp_path, store_outage="fail_open", store_timeout=0.2)
    try:
        _, key = issue_key(gw)
        assert statuses(call(gw, key["key"])) == all_are(200)
        redis.pause()  # connections stay open, nothing answers
        time.sleep(CACHE_TTL_S * 2)
        started = time.monotonic()
        assert statuses(call(gw, key["key"])) == all_are(200)
        unseen = call(gw, UNKNOWN_KEY)
        assert time.monotonic() - started < 8, "each store call gives up after its timeout"
        assert_overloaded(unseen)
    finally:
        redis.resume()
        gw.stop()
