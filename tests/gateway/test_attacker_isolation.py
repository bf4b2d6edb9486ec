"""One team's hostile requests cost another team nothing, and a bounded amount of Redis.

Both tests run a real gateway on a real Redis. The first runs a victim team's workload alone, then
again while an attacker team sends every hostile body of test_hostile_input at the same gateway,
and compares what the victim got: its answers, usage records, budget spend and latency. The second
sends 1,000 requests with every stored field at its limit, all refused, and measures what Redis
holds afterwards against the bound the README states.
"""
from __future__ import annotations

import json
import statistics
import threading
import time

import httpx
import orjson
import pytest

from gateway.settings import InputLimits
from gateway.spill import SpillFiles
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY, base_settings
from tests.gateway.test_hostile_input import HI, MALFORMED, OVER_LIMITS
from tests.gateway.test_usage_recording import query, records
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

VICTIM_REQUESTS = 40
# anthropic/claude-sonnet-4.5: $3 in, $15 out per million; the fake answers 10 input tokens and
# exactly max_tokens output tokens.
VICTIM_COST = (10 * 3.0 + HI["max_tokens"] * 15.0) / 1e6
LIMITS = InputLimits()
# The README's bound: what 1,000 refused requests with every stored field at its default limit
# may add to Redis.
REDIS_BOUND_PER_1000_REFUSED = 16 * 1024 * 1024


def attack_bodies() -> list[tuple[bytes, dict]]:
    bodies = [(case[0] if isinstance(case, tuple) else case, {}) for case in MALFORMED.values()]
    for extra, headers, _ in OVER_LIMITS.values():
        bodies.append((json.dumps({**HI, **extra}).encode(), headers))
    return bodies


def run_victim(url: str, attacking: bool) -> list[float]:
    """The victim's requests, two at a time; with `attacking`, two attackers run all along."""
    latencies: list[float] = []
    statuses: list[int] = []
    done = threading.Event()
    attacked: list[int] = []
    bodies = attack_bodies()

    def attacker() -> None:
        with httpx.Client(base_url=url, headers={"x-api-key": TEAM_KEY, "content-type": "application/json"},
                          timeout=30) as c:
            while not done.is_set():
                for raw, headers in bodies:
                    attacked.append(c.post("/v1/messages", content=raw, headers=headers).status_code)
                    if done.is_set():
                        return

    def victim(count: int) -> None:
        with httpx.Client(base_url=url, headers={"x-api-key": OTHER_TEAM_KEY}, timeout=30) as c:
            for _ in range(count):
                started = time.perf_counter()
                response = c.post("/v1/messages", json=HI)
                latencies.append(time.perf_counter() - started)
                statuses.append(response.status_code)

    attackers = [threading.Thread(target=attacker) for _ in range(2 if attacking else 0)]
    for t in attackers:
        t.start()
    victims = [threading.Thread(target=victim, args=(VICTIM_REQUESTS // 2,)) for _ in range(2)]
    for t in victims:
        t.start()
    for t in victims:
        t.join()
    done.set()
    for t in attackers:
        t.join()
    assert statuses == [200] * VICTIM_REQUESTS
    if attacking:
        assert len(attacked) >= len(bodies), "the attack ran during the whole workload"
        assert set(attacked) == {400}
    return latencies


def victim_outcome(db_url: str, redis_url: str) -> tuple:
    found = records(db_url, "team-b", VICTIM_REQUESTS)
    now = time.time()
    [row] = query(redis_url, "query_usage", start=now - 3600, end=now + 60, group_by=["team"], team="team-b")
    shape = sorted((r["status"], r["model"], r["input_tokens"], r["output_tokens"], r["cost_usd"], r["user"],
                    r["session_id"], r["trace"]) for r in found)
    return shape, row["requests"], round(row["cost_usd"], 9)


# It compares the victim's latency alone and under attack: another worker's load would skew one of them.
@pytest.mark.alone
def test_an_attacking_team_changes_nothing_for_another_team(redis_server, postgres_server, anthropic_upstream,  # noqa: F811
                                                            tmp_path):
    outcomes, latencies = [], []
    for attacking in (False, True):
        redis_server.flush()
        postgres_server.reset()
        anthropic_upstream.reset()
        settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                                 usage_spill_path=str(tmp_path / f"spill-{attacking}.jsonl"),
                                 teams=[{"name": "team-b", "budget_daily_usd": 1.0}])
        with GatewayThread(**settings) as gw:
            latencies.append(run_victim(gw.url, attacking))
            outcomes.append(victim_outcome(postgres_server.url, redis_server.url))
            spend = redis_server.client().hgetall(next(redis_server.client().scan_iter("gw:{team-b}:spend:d:*")))
        assert int(spend["team"]) == round(VICTIM_REQUESTS * VICTIM_COST * 1e9)
        assert not SpillFiles(tmp_path / f"spill-{attacking}.jsonl").pending(), "no usage write failed"
    alone, attacked = outcomes
    assert attacked == alone
    assert alone[1:] == (VICTIM_REQUESTS, round(VICTIM_REQUESTS * VICTIM_COST, 9))
    # Latency: generous bounds for a shared machine, far below what a crash or a stall would cost.
    quiet, busy = (statistics.median(x) for x in latencies)
    assert busy < max(3 * quiet, quiet + 0.05), (quiet, busy)
    assert max(latencies[1]) < 1.0


def maximal_body(i: int) -> dict:
    """A request with every field the usage record keeps at its limit, distinct per request."""
    pad = LIMITS.trace_bytes - 40
    return {**HI, "model": f"unknown-{i:06d}-".ljust(LIMITS.model_chars, "m") if i % 2 else HI["model"],
            "trace": {"trace_id": f"{i:06d}", "blob": "é" * (pad // 2 - 40)},
            "session_id": f"{i:06d}".ljust(LIMITS.id_chars, "s"), "user": f"{i:06d}".ljust(LIMITS.id_chars, "u"),
            "metadata": {"user_id": "u" * LIMITS.metadata_user_id_chars}}


def test_a_thousand_refused_requests_with_maximal_fields_stay_under_the_documented_redis_bound(
        redis_server, postgres_server, anthropic_upstream, tmp_path):  # noqa: F811
    redis_server.flush()
    postgres_server.reset()
    anthropic_upstream.reset()
    settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                             usage_spill_path=str(tmp_path / "spill.jsonl"), teams=[{"name": "team-a", "rpm": 1}])
    with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY},
                                                       timeout=30) as c:
        assert c.post("/v1/messages", json=HI).status_code == 200  # the one request the rpm lets through
        records(postgres_server.url, "team-a", 1)
        client = redis_server.client()
        before = client.info("memory")["used_memory"]
        statuses: dict[int, int] = {}
        for i in range(1000):
            raw = orjson.dumps(maximal_body(i))
            status = c.post("/v1/messages", content=raw, headers={"content-type": "application/json"}).status_code
            statuses[status] = statuses.get(status, 0) + 1
        # Over the limits, a field is refused and not kept at all (a 10 MB trace once cost 10 MB each).
        huge = orjson.dumps({**HI, "trace": {"blob": "x" * 10_000_000}})
        for _ in range(20):
            statuses[400] = statuses.get(400, 0) + 1
            assert c.post("/v1/messages", content=huge, headers={"content-type": "application/json"}).status_code == 400
        assert statuses == {404: 500, 429: 500, 400: 20}
        kept = records(postgres_server.url, "team-a", 1021, timeout=15)
    assert len(kept) == 1021
    grown = client.info("memory")["used_memory"] - before
    assert grown < REDIS_BOUND_PER_1000_REFUSED, f"Redis grew by {grown / 2**20:.1f} MiB"
