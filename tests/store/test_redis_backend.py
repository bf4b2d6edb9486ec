"""What only the Redis backend has: failures of the server, round trips, cluster URLs."""
from __future__ import annotations

import time

import pytest

from gateway.store.base import (
    BATCH_MARKS_KEPT,
    AdmissionRequest,
    KeyRecord,
    Limits,
    StoreUnavailable,
    Team,
    create_store,
    new_batch_id,
)
from tests.redis_server import CommandLog, RedisServer
from tests.store.conftest import NOW, secret_hash
from tests.store.test_usage import record

pytestmark = pytest.mark.anyio


@pytest.fixture
def own_server() -> RedisServer:
    """A server of the test's own, so stopping it disturbs nothing else."""
    with RedisServer() as server:
        yield server


async def _team_and_key(store, team_limits: Limits | None = None, key_limits: Limits | None = None,
                        created_at: float = NOW) -> None:
    """Team "team-a" holding key "key-1" (secret "s")."""
    await store.create_team(Team("team-a", team_limits or Limits(), created_at=created_at))
    await store.create_key(KeyRecord(id="key-1", team="team-a", prefix="sk", secret_hash=secret_hash("s"),
                                     created_at=created_at, limits=key_limits or Limits()))


async def _elapsed(call) -> float:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await call
    return time.monotonic() - started


async def test_a_stopped_redis_fails_fast_and_a_restarted_one_serves_again(own_server):
    store = create_store(own_server.url)
    try:
        await store.create_team(Team("team-a", created_at=NOW))
        own_server.stop()
        assert await _elapsed(store.get_team("team-a")) < 1.0
        assert await _elapsed(store.admit(AdmissionRequest(
            "team-a", "key-1", "r1", 10, 0.0, "m1", NOW))) < 1.0
        own_server.start()  # same port, empty: the server kept nothing
        assert await store.get_team("team-a") is None
        await store.create_team(Team("team-a", created_at=NOW))
        assert (await store.get_team("team-a")).name == "team-a"
    finally:
        await store.close()


async def test_a_hung_redis_times_out_instead_of_hanging(own_server):
    store = create_store(own_server.url, socket_timeout=0.3, connect_timeout=0.3)
    try:
        await store.ping()
        own_server.pause()
        assert await _elapsed(store.routing_snapshot()) < 1.0
        assert await _elapsed(store.list_teams()) < 1.0
        own_server.resume()
        assert (await store.routing_snapshot()).cooldowns == {}
    finally:
        own_server.resume()
        await store.close()


async def test_a_hung_redis_fails_admission_and_settlement_within_the_operation_timeout(own_server):
    # The request path's pipelined connection has no timer per command: its watchdog gives up on
    # the whole connection once the oldest command has waited operation_timeout.
    store = create_store(own_server.url, operation_timeout=0.4, connect_timeout=0.3)
    try:
        await _team_and_key(store)
        admit = AdmissionRequest("team-a", "key-1", "r1", 10, 0.0, "m1", NOW)
        assert (await store.admit(admit)).admitted
        own_server.pause()
        assert 0.3 < await _elapsed(store.admit(AdmissionRequest("team-a", "key-1", "r2", 10, 0.0, "m1", NOW))) < 1.0
        assert await _elapsed(store.settle_and_append([("team-a", "key-1", "r1", 0.01, 10, NOW)],
                                                      [record("r1", NOW)])) < 1.0
        own_server.resume()
        assert (await store.admit(AdmissionRequest("team-a", "key-1", "r3", 10, 0.0, "m1", NOW))).admitted
    finally:
        own_server.resume()
        await store.close()


async def test_nothing_listening_is_unavailable_at_once():
    unused = RedisServer()  # a free port, never started
    store = create_store(unused.url)
    try:
        assert await _elapsed(store.ping()) < 1.0
    finally:
        await store.close()
        unused.close()


async def test_admission_is_one_evalsha_round_trip(redis_server):
    redis_server.flush()
    store = create_store(redis_server.url)
    try:
        await _team_and_key(store, Limits(rpm=10, tpm=1000, max_concurrent=2, budget_daily_usd=1.0),
                            Limits(rpm=5))
        await store.ping()  # loads the scripts
        await store.admit(AdmissionRequest("team-a", "key-1", "warm", 10, 0.01, "m1", NOW))
        with CommandLog(redis_server) as log:
            verdict = await store.admit(AdmissionRequest("team-a", "key-1", "r1", 10, 0.01,
                                                         "m1", NOW))
            assert verdict.admitted
            assert log.names() == ["evalsha"]
            await store.settle("team-a", "key-1", "r1", 0.01, 10, NOW)
            await store.renew("team-a", "warm", NOW)
            assert log.names() == ["evalsha", "evalsha"]
    finally:
        await store.close()


async def test_the_rate_window_keeps_one_entry_per_second_whatever_the_rate(redis_server):
    """A sliding log of request ids would hold a minute of traffic (360,000 entries at 6,000
    requests a second) and delete it in one script call after a quiet minute, stalling Redis for
    every team; seconds keep both the memory and the purge to a window's worth of seconds."""
    redis_server.flush()
    store = create_store(redis_server.url)
    try:
        await _team_and_key(store, Limits(rpm=100_000, tpm=10_000_000), Limits(rpm=50_000))
        for i in range(2000):
            await store.admit(AdmissionRequest("team-a", "key-1", f"r{i}", 10, 0.0, "m1", NOW + i / 1000))
        r = redis_server.client()
        for window in ("gw:{team-a}:rate", "gw:{team-a}:k:key-1:rate"):
            assert r.zrange(window, 0, -1) == ["1736942400", "1736942401"]
            assert r.hgetall(window + ":n") == {"c:1736942400": "1000", "c:1736942401": "1000",
                                                "t:1736942400": "10000", "t:1736942401": "10000",
                                                "_count": "2000", "_sum": "20000"}
        await store.settle("team-a", "key-1", "r1999", 0.0, 4, NOW + 2.5)
        assert r.hget("gw:{team-a}:rate:n", "t:1736942401") == "9994"
        assert r.hget("gw:{team-a}:k:key-1:rate:n", "_sum") == "19994"
        await store.admit(AdmissionRequest("team-a", "key-1", "later", 10, 0.0, "m1", NOW + 70))
        assert r.zrange("gw:{team-a}:rate", 0, -1) == ["1736942470"]
        assert r.hgetall("gw:{team-a}:rate:n") == {"c:1736942470": "1", "t:1736942470": "10",
                                                   "_count": "1", "_sum": "10"}
    finally:
        await store.close()


async def test_a_batch_of_over_a_thousand_settlements_ends_every_lease_and_charges_each(redis_server):
    """settle_batch.lua reads and removes a batch's request ids a thousand at a time, and writes
    each counter once per batch: the end state is that of settling one request after another."""
    redis_server.flush()
    store = create_store(redis_server.url, operation_timeout=10.0, socket_timeout=5.0)
    try:
        await _team_and_key(store, Limits(rpm=100_000, tpm=10**9, max_concurrent=5000, budget_daily_usd=1000.0))
        rids = [f"r{i}" for i in range(1200)]
        for i, rid in enumerate(rids):
            assert (await store.admit(AdmissionRequest("team-a", "key-1", rid, 10, 0.02, "m1", NOW + i / 1000))).admitted
        # Each request twice, and one never admitted: a repeat within a batch is charged again.
        settlements = [("team-a", "key-1", rid, 0.01, 4, NOW + 2) for rid in rids + rids[:5] + ["never"]]
        assert (await store.write_batch(settlements, [], new_batch_id())).settled == 1206
        r = redis_server.client()
        assert r.zcard("gw:{team-a}:leases") == 0 and r.hlen("gw:{team-a}:res") == 0
        assert r.hgetall("gw:{team-a}:reserved") == {"team": "0", "k:key-1": "0"}
        assert r.hgetall("gw:{team-a}:kconc") == {"k:key-1": "0"}
        assert r.hgetall("gw:{team-a}:spend:d:20250115") == {"team": str(1206 * 10_000_000),
                                                             "k:key-1": str(1206 * 10_000_000)}
        assert r.hgetall("gw:{team-a}:rate:n") == {"c:1736942400": "1000", "c:1736942401": "200",
                                                   "t:1736942400": "4000", "t:1736942401": "800",
                                                   "_count": "1200", "_sum": "4800"}
    finally:
        await store.close()


async def test_a_batch_charging_more_than_2_53_nano_dollars_is_charged_to_the_nano_dollar(redis_server):
    """A batch's charges to one counter are summed before they are written; past 2^53, where a
    double no longer holds every integer, the sum is written out rather than rounded."""
    redis_server.flush()
    store = create_store(redis_server.url)
    try:
        await _team_and_key(store)
        nanos = 999_999_999_999_993  # $999,999.999999993: odd, so a rounded sum would show
        settlements = [("team-a", "key-1", f"r{i}", nanos / 1e9, 1, NOW) for i in range(40)]
        assert (await store.write_batch(settlements, [], new_batch_id())).settled == 40
        spend = redis_server.client().hgetall("gw:{team-a}:spend:m:202501")
        assert spend == {"team": str(40 * nanos), "k:key-1": str(40 * nanos)}
    finally:
        await store.close()


async def test_usage_rollups_summing_past_2_53_are_summed_to_the_unit(redis_server):
    """usage.lua sums a batch's amounts per rollup field before writing them; past 2^53 the sum
    is written out rather than rounded, as for settlements."""
    redis_server.flush()
    store = create_store(redis_server.url)
    try:
        nanos = 999_999_999_999_993
        records = [record(f"r{i}", NOW + i, cost=nanos / 1e9) for i in range(40)]
        assert (await store.write_batch([], records, new_batch_id())).added == 40
        r = redis_server.client()
        for rollup in ("gw:{team-a}:roll:h:1736942400", "gw:{team-a}:roll:d:1736899200"):
            assert r.hget(rollup, 'c|["m1","p1","u1"]') == str(40 * nanos)
            assert r.hget(rollup, 'i|["m1","p1","u1"]') == str(40 * 100)
    finally:
        await store.close()


async def test_batch_marks_go_when_acknowledged_and_surplus_ones_only_past_the_window(redis_server):
    redis_server.flush()
    store = create_store(redis_server.url, usage_dedupe_s=60)
    r = redis_server.client()
    try:
        now = time.time()
        first, second = new_batch_id(now), new_batch_id(now)
        await store.write_batch([("team-a", "key-1", "r1", 0.0, 1, NOW)], [record("r1", NOW)], first)
        await store.write_batch([("team-a", "key-1", "r2", 0.0, 1, NOW)], [], second)
        assert sorted(r.zrange("gw:{team-a}:batches", 0, -1)) == sorted([f"{first}:s", f"{first}:u:1", f"{second}:s"])
        await store.write_batch([], [], None, [("team-a", first)])
        assert r.zrange("gw:{team-a}:batches", 0, -1) == [f"{second}:s"]
        await store.write_batch([], [], None, [("team-a", second)])
        assert not r.exists("gw:{team-a}:batches")  # nothing in flight: nothing kept
        # Marks never acknowledged (a writer killed before hearing back) are kept up to
        # BATCH_MARKS_KEPT per team whatever their age; beyond it the oldest past the window go.
        for n in range(BATCH_MARKS_KEPT + 5):
            await store.write_batch([("team-a", "key-1", f"old{n}", 0.0, 1, NOW)], [], new_batch_id(now - 120 + n / 1e4))
        assert r.zcard("gw:{team-a}:batches") == BATCH_MARKS_KEPT
        for n in range(BATCH_MARKS_KEPT + 5):
            await store.write_batch([("team-b", "key-1", f"new{n}", 0.0, 1, NOW)], [], new_batch_id(now))
        assert r.zcard("gw:{team-b}:batches") == BATCH_MARKS_KEPT + 5  # none is past the window yet
    finally:
        await store.close()


async def test_every_key_a_request_leaves_behind_expires_except_the_team_and_its_keys(redis_server):
    redis_server.flush()
    store = create_store(redis_server.url)
    try:
        now = time.time()
        await _team_and_key(store, Limits(rpm=100, tpm=100_000, max_concurrent=5, budget_daily_usd=10.0),
                            Limits(rpm=50), created_at=now)
        for rid in ("r1", "r2"):
            assert (await store.admit(AdmissionRequest("team-a", "key-1", rid, 10, 0.01, "m1", now))).admitted
        await store.settle_and_append([("team-a", "key-1", rid, 0.005, 8, now) for rid in ("r1", "r2")],
                                      [record(rid, now) for rid in ("r1", "r2")])
        r = redis_server.client()
        # The usage buffer does not expire either: the record store's drainers empty it.
        lasting = {"gw:{team-a}:team", "gw:{team-a}:keys", "gw:{team-a}:key:key-1", "gw:{team-a}:usage"}
        left = set(r.scan_iter("gw:{team-a}:*"))
        assert lasting < left and len(left) > 10
        assert r.xlen("gw:{team-a}:usage") == 2
        assert {k: r.ttl(k) for k in left - lasting if r.ttl(k) <= 0} == {}
        day = next(k for k in left if ":spend:d:" in k)
        assert r.hgetall(day) == {"team": "10000000", "k:key-1": "10000000"}
    finally:
        await store.close()


async def test_a_usage_batch_is_one_script_call_per_team(redis_server):
    redis_server.flush()
    store = create_store(redis_server.url)
    try:
        await store.ping()
        batch = [record(f"a{i}", NOW + i) for i in range(20)]
        batch += [record(f"b{i}", NOW + i, team="team-b") for i in range(20)]
        with CommandLog(redis_server) as log:
            assert await store.append_usage(batch) == 40
            # one script per team slot, plus the global list of teams with usage
            assert sorted(log.names()) == ["evalsha", "evalsha", "sadd"]
    finally:
        await store.close()


async def test_a_cluster_is_reached_by_url_scheme_or_by_option(redis_cluster):
    redis_cluster.flush()
    by_scheme = create_store(redis_cluster.url)
    by_option = create_store(redis_cluster.nodes[1].url, cluster=True)
    try:
        await by_scheme.create_team(Team("team-a", created_at=NOW))
        assert (await by_option.get_team("team-a")).name == "team-a"
    finally:
        await by_scheme.close()
        await by_option.close()


async def test_settlements_and_usage_of_a_batch_share_one_pipelined_round_trip(redis_server):
    redis_server.flush()
    store = create_store(redis_server.url)
    try:
        await _team_and_key(store, Limits(budget_daily_usd=10))
        await store.ping()
        for i in range(5):
            assert (await store.admit(AdmissionRequest("team-a", "key-1", f"r{i}", 10, 0.5, "m1", NOW))).admitted
        settlements = [("team-a", "key-1", f"r{i}", 0.25, 150, NOW) for i in range(5)]
        batch = [record(f"r{i}", NOW + i) for i in range(5)]
        batch_id = new_batch_id()
        with CommandLog(redis_server) as log:
            await store.settle_and_append(settlements, batch, batch_id)
            # MONITOR shows a pipeline's commands one by one; what matters is that no reply
            # was awaited between them, which redis-py's pipeline guarantees.
            assert sorted(log.names()) == ["evalsha", "evalsha", "sadd"]  # settlements, records
        # idempotent: the same batch again changes nothing
        await store.settle_and_append(settlements, batch, batch_id)
        with redis_server.client() as c:
            assert c.xlen("gw:{team-a}:usage") == 5
        # the budget was charged the actual cost once: 5 × 0.25 of 10.00 leaves room for 8.75 more
        for i in range(17):
            assert (await store.admit(AdmissionRequest("team-a", "key-1", f"n{i}", 10, 0.5, "m1", NOW))).admitted
        assert not (await store.admit(AdmissionRequest("team-a", "key-1", "last", 10, 0.5, "m1", NOW))).admitted
    finally:
        await store.close()


async def test_settle_and_append_reloads_forgotten_scripts(own_server):
    store = create_store(own_server.url)
    try:
        await store.ping()
        with own_server.client() as c:
            c.script_flush()  # what a restarted Redis has forgotten
        await store.settle_and_append([("team-a", "key-1", "r1", 0.1, 10, NOW)], [record("r1", NOW)])
        with own_server.client() as c:
            assert c.xlen("gw:{team-a}:usage") == 1
    finally:
        await store.close()
