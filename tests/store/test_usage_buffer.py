"""The Redis usage buffer between the request path and the record store: bounded, read through a
consumer group, emptied only by acknowledgement; and a cluster batching a whole batch per node."""
from __future__ import annotations

import time

import orjson
import pytest

from redis import Redis, RedisCluster

from gateway.store.base import AdmissionRequest, BufferFull, KeyRecord, Limits, StoreUnavailable, Team, new_batch_id
from tests.redis_server import RedisServer, redis_cluster, redis_server  # noqa: F401  (session fixtures)
from tests.store.conftest import open_store
from tests.store.test_usage import record

pytestmark = pytest.mark.anyio
NOW = 1_736_812_800.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["redis", "cluster"])
def servers(request):
    servers = request.getfixturevalue("redis_cluster" if request.param == "cluster" else "redis_server")
    servers.flush()
    return servers


def buffer_length(servers, team: str = "team-a") -> int:
    nodes = getattr(servers, "nodes", [servers])
    total = 0
    for node in nodes:
        with node.client() as c:
            try:
                total += c.xlen(f"gw:{{{team}}}:usage")
            except Exception:  # noqa: BLE001  (MOVED: the key lives on another node)
                pass
    return total


async def test_a_full_buffer_takes_no_more_and_hands_the_rest_back(servers):
    store = open_store(servers.url, usage_buffer_max_records=3)
    try:
        batch = [record(f"r{i}", NOW + i) for i in range(5)]
        batch_id = new_batch_id()
        left = await store.settle_and_append([], batch, batch_id)
        assert [r["request_id"] for r in left] == ["r3", "r4"]
        assert buffer_length(servers) == 3
        [row] = await store.query_usage(NOW, NOW + 3600, [])
        assert row["requests"] == 3  # the refused ones are not counted yet: they come back
        with pytest.raises(BufferFull) as refused:
            await store.append_usage(left)
        assert [r["request_id"] for r in refused.value.records] == ["r3", "r4"]
        # The drainers commit and acknowledge: there is room again. The same batch again (its
        # reply was lost, and a replay sends it whole) takes only the records after those it took.
        entries = await store.buffer_read(["team-a"], "c1", 10)
        await store.buffer_ack([(team, entry_id) for team, entry_id, _ in entries])
        assert await store.settle_and_append([], batch, batch_id) == []
        [row] = await store.query_usage(NOW, NOW + 3600, [])
        assert row["requests"] == 5
        assert buffer_length(servers) == 2
    finally:
        await store.close()


async def test_entries_leave_the_buffer_only_when_acknowledged(servers):
    store = open_store(servers.url)
    try:
        await store.append_usage([record(f"r{i}", NOW + i) for i in range(4)])
        await store.append_usage([record("b1", NOW, team="team-b")])
        assert sorted(await store.buffer_teams()) == ["team-a", "team-b"]
        entries = await store.buffer_read(["team-a", "team-b"], "replica-1", 10)
        assert sorted(orjson.loads(raw)["request_id"] for _, _, raw in entries) == ["b1", "r0", "r1", "r2", "r3"]
        assert await store.buffer_read(["team-a", "team-b"], "replica-2", 10) == []  # given to replica-1 only
        assert await store.buffer_length(["team-a", "team-b"]) == 5  # read, not committed
        await store.buffer_ack([(t, i) for t, i, _ in entries if t == "team-b"])
        assert await store.buffer_length(["team-a", "team-b"]) == 4
    finally:
        await store.close()


async def test_reads_and_acknowledgements_of_a_redis_that_is_down_or_frozen_wait_and_lose_nothing():
    """The drainer reads on a connection of its own: a Redis that stops or stops answering is
    StoreUnavailable (the drainer waits and goes again), and the entries it held are still there."""
    with RedisServer() as server:
        store = open_store(server.url, operation_timeout=0.3, socket_timeout=0.3, connect_timeout=0.3)
        try:
            await store.append_usage([record(f"r{i}", NOW + i) for i in range(3)])
            held = await store.buffer_read(["team-a"], "replica-1", 10)
            assert len(held) == 3
            server.pause()
            with pytest.raises(StoreUnavailable):
                await store.buffer_read(["team-a"], "replica-1", 10, own_pending=True)
            server.resume()
            again = await store.buffer_read(["team-a"], "replica-1", 10, own_pending=True)
            assert [i for _, i, _ in again] == [i for _, i, _ in held]
            await store.buffer_ack([(t, i) for t, i, _ in again])
            assert await store.buffer_length(["team-a"]) == 0
            server.stop()
            with pytest.raises(StoreUnavailable):
                await store.buffer_read(["team-a"], "replica-1", 10)
            with pytest.raises(StoreUnavailable):
                await store.buffer_ack([("team-a", "1-0")])
        finally:
            await store.close()


async def test_entries_a_dead_replica_held_are_claimed_by_another(servers):
    store = open_store(servers.url)
    try:
        await store.append_usage([record(f"r{i}", NOW + i) for i in range(3)])
        held = await store.buffer_read(["team-a"], "dead-replica", 10)
        assert len(held) == 3
        assert await store.buffer_read(["team-a"], "survivor", 10, claim_idle_ms=60_000) == []  # not idle long enough
        time.sleep(0.05)
        claimed = await store.buffer_read(["team-a"], "survivor", 10, claim_idle_ms=20)
        assert sorted(i for _, i, _ in claimed) == sorted(i for _, i, _ in held)
    finally:
        await store.close()


async def test_a_buffer_written_before_consumer_groups_is_read_from_its_start(servers):
    store = open_store(servers.url)
    try:
        await store.ping()
        await store.append_usage([record("new", NOW)])  # makes the group and the list of buffers
        direct = RedisCluster(host="127.0.0.1", port=servers.nodes[0].port, decode_responses=True) \
            if hasattr(servers, "nodes") else Redis(host="127.0.0.1", port=servers.port, decode_responses=True)
        with direct:
            direct.delete("gw:{team-a}:usage")
            direct.xadd("gw:{team-a}:usage", {"r": orjson.dumps(record("old", NOW - 60)).decode()})
            direct.expire("gw:{team-a}:usage", 7 * 86400)  # as earlier versions kept it
            await store.append_usage([record("newer", NOW)])
            assert direct.ttl("gw:{team-a}:usage") == -1  # a buffer never expires
        entries = await store.buffer_read(["team-a"], "c1", 10)
        entries += await store.buffer_read(["team-a"], "c1", 10)
        assert [orjson.loads(raw)["request_id"] for _, _, raw in entries] == ["old", "newer"]
    finally:
        await store.close()


async def test_consumers_of_replicas_that_are_gone_are_forgotten_unless_they_hold_records(servers):
    store = open_store(servers.url)
    try:
        await store.append_usage([record(f"r{i}", NOW + i) for i in range(2)])
        done = await store.buffer_read(["team-a"], "gone-replica", 1)
        await store.buffer_ack([(t, i) for t, i, _ in done])
        assert len(await store.buffer_read(["team-a"], "holding-replica", 1)) == 1  # read, never committed
        assert await store.buffer_forget_consumers(["team-a"], idle_ms=0) == 1
        assert await store.buffer_forget_consumers(["team-a"], idle_ms=0) == 0
        claimed = await store.buffer_read(["team-a"], "survivor", 10, claim_idle_ms=0)
        assert [orjson.loads(raw)["request_id"] for _, _, raw in claimed] == ["r1"]  # still pending, still claimable
    finally:
        await store.close()


def script_calls(cluster) -> int:
    calls = 0
    for node in cluster.nodes:
        with node.client() as c:
            stats = c.info("commandstats")
            calls += int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return calls


async def test_a_cluster_settles_and_records_a_batch_with_one_script_call_per_team_each(redis_cluster):  # noqa: F811
    redis_cluster.flush()
    store = open_store(redis_cluster.url)
    try:
        settlements, records = [], []
        for team in ("team-a", "team-b"):
            await store.create_team(Team(team, limits=Limits(budget_daily_usd=100), created_at=NOW))
            await store.create_key(KeyRecord(id=f"{team}-key", team=team, prefix="p", secret_hash=f"{len(team):064x}"
                                             if team == "team-a" else "f" * 64, created_at=NOW))
            for i in range(20):
                rid = f"{team}-{i}"
                verdict = await store.admit(AdmissionRequest(team, f"{team}-key", rid, 10, 0.5, "m1", time.time()))
                assert verdict.admitted
                settlements.append((team, f"{team}-key", rid, 0.25, 10, time.time()))
                records.append(record(rid, NOW + i, team=team))
        await store.ping()
        for node in redis_cluster.nodes:
            with node.client() as c:
                c.config_resetstat()
        batch_id = new_batch_id()
        assert await store.settle_and_append(settlements, records, batch_id) == []
        # Two teams: one settlement script and one usage script each, whatever the batch size
        # (a cluster used to run one settlement script per request).
        assert script_calls(redis_cluster) == 4
        spent = await store.query_usage(NOW, NOW + 3600, ["team"])
        assert [(r["team"], r["requests"]) for r in spent] == [("team-a", 20), ("team-b", 20)]
        # Settled once each: the same batch again settles nothing more.
        assert await store.settle_and_append(settlements, records, batch_id) == []
        for team in ("team-a", "team-b"):
            assert not (await store.admit(AdmissionRequest(team, f"{team}-key", "big", 10, 95.1, "m1",
                                                           time.time()))).admitted  # 20 x 0.25 spent of 100
            assert (await store.admit(AdmissionRequest(team, f"{team}-key", "fits", 10, 94.9, "m1",
                                                       time.time()))).admitted
    finally:
        await store.close()
