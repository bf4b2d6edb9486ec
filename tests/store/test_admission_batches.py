"""Admission in batches: concurrent requests of one key go to Redis together, in one call of the
admission script, and get exactly the verdicts and leave exactly the state that admitting them
one after another would."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import keys
from gateway.store.base import AdmissionRequest, KeyRecord, Limits, StoreUnavailable, Team
from gateway.store.redis import ADMIT_BATCH_MAX, _script_text
from policies.limits import day_id, month_id, next_day_start, next_month_start
from tests.redis_server import RedisServer
from tests.store.conftest import ALL_BACKENDS, NOW, open_store

pytestmark = pytest.mark.anyio


def request(rid: str, *, cost: float = 0.0, tokens: int = 10, now: float = NOW) -> AdmissionRequest:
    return AdmissionRequest(team="team-a", key_id="key-1", request_id=rid, tokens=tokens, cost_usd=cost,
                            model="m1", now=now)


def _nodes(backend: str, fixture_request: pytest.FixtureRequest) -> list[RedisServer]:
    if backend == "redis":
        return [fixture_request.getfixturevalue("redis_server")]
    return fixture_request.getfixturevalue("redis_cluster").nodes


class ScriptCalls:
    """EVALSHA calls the Redis servers ran since `reset` (INFO commandstats, summed over nodes)."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    def reset(self) -> None:
        for node in self.nodes:
            with node.client() as c:
                c.config_resetstat()

    def count(self) -> int:
        total = 0
        for node in self.nodes:
            with node.client() as c:
                total += c.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        return total


@pytest.fixture
def script_calls(backend: str, request: pytest.FixtureRequest) -> ScriptCalls | None:
    return None if backend == "memory" else ScriptCalls(_nodes(backend, request))


async def _concurrently(store, requests: list[AdmissionRequest], calls: ScriptCalls | None) -> list:
    await store.admit(request("warm-up", now=NOW - 3600))  # scripts loaded, connections open
    if calls is not None:
        calls.reset()
    return await asyncio.gather(*(store.admit(r) for r in requests))


def _batches_for(requests: int) -> int:
    """The script calls `requests` concurrent admissions take: the first goes at once, alone, and
    the others, arriving while it is in flight, follow in batches of at most ADMIT_BATCH_MAX."""
    return 1 + -(-(requests - 1) // ADMIT_BATCH_MAX)


# -- concurrent admissions of one key ------------------------------------------------------------
@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_an_rpm_of_10_admits_exactly_10_of_25_concurrent_requests_in_two_script_calls(
        store, make_team, make_key, script_calls):
    await make_team(rpm=10)
    await make_key()
    verdicts = await _concurrently(store, [request(f"r{i}", now=NOW + i / 1000) for i in range(25)], script_calls)
    assert [v.admitted for v in verdicts] == [True] * 10 + [False] * 15
    assert [v.requests_remaining for v in verdicts[:10]] == list(range(9, -1, -1))
    assert {v.reason for v in verdicts[10:]} == {"rpm"}
    if script_calls is not None:
        assert script_calls.count() == 2


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_budget_for_five_reservations_admits_exactly_five_of_twenty_concurrent_requests(
        store, make_team, make_key, script_calls):
    await make_team(budget_daily_usd=0.05)
    await make_key(budget_monthly_usd=1.0)
    verdicts = await _concurrently(store, [request(f"r{i}", cost=0.01) for i in range(20)], script_calls)
    assert sum(v.admitted for v in verdicts) == 5
    refused = [v for v in verdicts if not v.admitted]
    assert {(v.reason, v.budget_left_usd) for v in refused} == {("budget_daily", 0.0)}
    assert all(v.budgeted for v in verdicts)
    if script_calls is not None:
        assert script_calls.count() == 2


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_team_concurrency_of_three_admits_three_of_twelve_concurrent_requests(
        store, make_team, make_key, script_calls):
    await make_team(max_concurrent=3)
    await make_key()
    verdicts = await _concurrently(store, [request(f"r{i}") for i in range(12)], script_calls)
    assert [v.admitted for v in verdicts] == [True] * 3 + [False] * 9
    assert {(v.reason, v.retry_after) for v in verdicts[3:]} == {("concurrency", 1.0)}
    if script_calls is not None:
        assert script_calls.count() == 2


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_a_burst_goes_in_batches_of_at_most_the_cap(store, make_team, make_key, script_calls):
    await make_team(rpm=100, tpm=10_000)
    await make_key(rpm=1000)
    requests = [request(f"r{i}", tokens=1) for i in range(150)]
    verdicts = await _concurrently(store, requests, script_calls)
    assert [v.admitted for v in verdicts] == [True] * 100 + [False] * 50
    assert [v.tokens_remaining for v in verdicts[:3]] == [9_999, 9_998, 9_997]
    assert script_calls.count() == _batches_for(150) == 4


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_a_request_id_twice_in_one_batch_is_leased_once(store, store_url, make_team, make_key):
    await make_team(max_concurrent=5, rpm=10)
    await make_key()
    verdicts = await _concurrently(store, [request(r) for r in ("a", "b", "a", "c", "b")], None)
    assert all(v.admitted for v in verdicts)
    assert [v.requests_remaining for v in verdicts] == [9, 8, 8, 7, 7]  # a repeat counts once
    client = redis.Redis.from_url(store_url, decode_responses=True)
    # (the warm-up's lease had run out: the first batch ended it)
    assert sorted(client.zrange(keys.TeamKeys("team-a").leases, 0, -1)) == ["a", "b", "c"]
    client.close()


# -- cancellation and failures -------------------------------------------------------------------
@pytest.fixture
def own_server() -> RedisServer:
    """A server of the test's own, so pausing or stopping it disturbs nothing else."""
    with RedisServer() as server:
        yield server


async def _team_and_key(store, **team_limits) -> None:
    await store.create_team(Team("team-a", Limits(**team_limits), created_at=NOW))
    await store.create_key(KeyRecord(id="key-1", team="team-a", prefix="sk", secret_hash="0" * 64, created_at=NOW))


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_waiter_cancelled_while_queued_is_never_admitted_and_the_others_are(own_server):
    store = open_store(own_server.url)
    try:
        await _team_and_key(store, max_concurrent=10)
        await store.admit(request("warm-up", now=NOW - 3600))
        calls = ScriptCalls([own_server])
        calls.reset()
        own_server.pause()  # the first batch stays in flight while the others queue behind it
        first = asyncio.create_task(store.admit(request("first")))
        await _turns()
        queued = {rid: asyncio.create_task(store.admit(request(rid))) for rid in ("a", "b", "c")}
        await _turns()
        queued["b"].cancel()
        await _turns()
        own_server.resume()
        assert (await first).admitted
        assert (await queued["a"]).admitted and (await queued["c"]).admitted
        with pytest.raises(asyncio.CancelledError):
            await queued["b"]
        with own_server.client() as c:
            assert sorted(c.hkeys(keys.TeamKeys("team-a").reservations)) == ["a", "c", "first"]
        assert calls.count() == 2
    finally:
        own_server.resume()
        await store.close()


async def test_a_waiter_cancelled_while_its_batch_is_in_flight_holds_up_nobody(own_server):
    store = open_store(own_server.url)
    try:
        await _team_and_key(store)
        await store.admit(request("warm-up", now=NOW - 3600))
        own_server.pause()
        first = asyncio.create_task(store.admit(request("first")))
        await _turns()
        queued = asyncio.create_task(store.admit(request("queued")))
        await _turns()
        first.cancel()
        await _turns()
        own_server.resume()
        assert (await queued).admitted
        with pytest.raises(asyncio.CancelledError):
            await first
        # Sent before its caller gave up, the first was admitted: its lease runs out unsettled, as
        # any admission whose caller went away.
        with own_server.client() as c:
            assert sorted(c.hkeys(keys.TeamKeys("team-a").reservations)) == ["first", "queued"]
    finally:
        own_server.resume()
        await store.close()


@pytest.mark.parametrize("fault", ["stopped", "hung"])
async def test_a_failing_redis_fails_the_batch_in_flight_and_those_behind_it_within_the_timeout(own_server, fault):
    store = open_store(own_server.url, connect_timeout=0.3, operation_timeout=0.4)
    try:
        await _team_and_key(store)
        await store.admit(request("warm-up", now=NOW - 3600))
        own_server.stop() if fault == "stopped" else own_server.pause()
        started = time.monotonic()
        results = await asyncio.gather(*(store.admit(request(f"r{i}")) for i in range(10)), return_exceptions=True)
        assert time.monotonic() - started < 1.0
        assert [type(r) for r in results] == [StoreUnavailable] * 10
    finally:
        own_server.start() if fault == "stopped" else own_server.resume()
    try:
        # The lanes let their waiters go: the key is admitted again once Redis is back (a
        # restarted one without its records, which are made again).
        if fault == "stopped":
            with contextlib.suppress(StoreUnavailable):  # redis-py finds its pooled connection closed
                await store.ping()
            await _team_and_key(store)
        assert (await store.admit(request("after", now=NOW + 1))).admitted
    finally:
        await store.close()


async def test_a_redis_that_forgot_the_scripts_admits_a_whole_batch_after_loading_them(own_server):
    store = open_store(own_server.url)
    try:
        await _team_and_key(store, rpm=5)
        await store.admit(request("warm-up", now=NOW - 3600))
        with own_server.client() as c:
            c.script_flush()
        results = await asyncio.gather(*(store.admit(request(f"r{i}")) for i in range(8)))
        assert [r.admitted for r in results] == [True] * 5 + [False] * 3
    finally:
        await store.close()


# -- the script: a batch is its requests one after another ----------------------------------------
LEASE_TTL, WINDOW, LEASE_KEY_TTL, CONCURRENCY_WAIT, ABANDONED_TTL = 30.0, 60.0, 60, 1.0, 3_456_000
TEAM = keys.TeamKeys("t")


def _script_keys(key_id: str, now: float) -> list[str]:
    return [TEAM.record, TEAM.key_record(key_id), TEAM.window, TEAM.window_tokens, TEAM.key_window(key_id),
            TEAM.key_window_tokens(key_id), TEAM.leases, TEAM.key_concurrency, TEAM.reservations, TEAM.reserved,
            TEAM.spend_day(day_id(now)), TEAM.spend_month(month_id(now)), TEAM.abandoned]


class Scripts:
    """The admission and settlement scripts, called directly on one database."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.admit_script = client.register_script(_script_text("admit"))  # loaded again if flushed
        self.settle_script = client.register_script(_script_text("settle_batch"))

    def admit(self, key_id: str, now: float, batch: list[tuple]) -> list:
        args: list = [key_id, repr(next_day_start(now)), repr(next_month_start(now)), repr(LEASE_TTL),
                      repr(WINDOW), LEASE_KEY_TTL, repr(CONCURRENCY_WAIT), ABANDONED_TTL, repr(now)]
        for r in batch:
            args += r
        return self.admit_script(keys=_script_keys(key_id, now), args=args)

    def settle(self, key_id: str, now: float, settlements: list[tuple[str, int, int]]) -> int:
        script_keys = [TEAM.window_tokens, TEAM.leases, TEAM.key_concurrency, TEAM.reservations, TEAM.reserved,
                       TEAM.abandoned, TEAM.batches, TEAM.key_window_tokens(key_id), TEAM.spend_day(day_id(now)),
                       TEAM.spend_month(month_id(now))]
        entries = [[key_id, rid, cost, tokens, 172_800, 2_764_800, 8, 9, 10] for rid, cost, tokens in settlements]
        return self.settle_script(keys=script_keys, args=[LEASE_KEY_TTL, "", "0", 1000, json.dumps(entries)])

    def contents(self) -> dict:
        """Every key: its type, its value, and its TTL (-1 for none)."""
        c = self.client
        read = {"hash": c.hgetall, "zset": lambda n: c.zrange(n, 0, -1, withscores=True), "string": c.get}
        return {name: (c.type(name), read[c.type(name)](name), c.ttl(name)) for name in sorted(c.keys("*"))}


def _same_contents(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][:2] == b[k][:2] and (a[k][2] < 0) == (b[k][2] < 0) and abs(a[k][2] - b[k][2]) <= 1 for k in a)


def _limits() -> st.SearchStrategy[dict]:
    def maybe(values: list) -> st.SearchStrategy:
        return st.none() | st.sampled_from(values)
    return st.fixed_dictionaries({
        "rpm": maybe([0, 1, 3, 10]), "tpm": maybe([50, 200, 1000]), "max_concurrent": maybe([1, 2, 4]),
        # nano-USD 1,000 to 200,000: a few requests of the costs below
        "budget_daily_usd": maybe([0.000001, 0.00001, 0.0001]),
        "budget_monthly_usd": maybe([0.000002, 0.00003, 0.0002]),
        "allowed_models": st.sampled_from([None, None, ["m1", "m2"], ["m1"]])})


_request = st.tuples(
    st.integers(0, 15).map(lambda i: f"r{i}"),                        # few ids: repeats, in and across batches
    st.sampled_from([0, 1, 10, 50, 400, 400, -1]),                    # tokens; -1: invalid
    st.sampled_from([0, 1000, 5000, 30000]),                          # cost, nano-USD
    st.sampled_from(["m1", "m1", "m2", "m1\nm2", "m3"]),
    st.sampled_from([0, 0, 0, 1]))                                    # rate only
_step = st.tuples(
    st.sampled_from([0.0, 0.0, 0.0, 0.3, 1.0, 31.0, 61.0, 86_400.0]),  # the clock moves on (leases expire at 30 s)
    st.sampled_from(["k1", "k2"]),
    st.lists(_request, min_size=1, max_size=12),
    st.booleans())                                                    # settle some admitted requests first


@pytest.fixture
def two_databases(redis_server) -> tuple[Scripts, Scripts]:
    batched = redis.Redis(port=redis_server.port, db=1, decode_responses=True)
    single = redis.Redis(port=redis_server.port, db=2, decode_responses=True)
    yield Scripts(batched), Scripts(single)
    batched.close()
    single.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(team=_limits(), key_limits=st.tuples(_limits(), _limits()), revoked=st.booleans(), steps=st.lists(_step, max_size=12))
def test_a_batch_answers_and_writes_exactly_what_its_requests_one_by_one_would(
        two_databases, team, key_limits, revoked, steps):
    batched, single = two_databases
    for scripts in two_databases:
        scripts.client.flushdb()
        scripts.client.set(TEAM.record, json.dumps({"limits": team}))
        for key_id, limits in zip(("k1", "k2"), key_limits):
            scripts.client.set(TEAM.key_record(key_id), json.dumps(
                {"limits": limits, "revoked": revoked and key_id == "k2", "expires_at": None}))
    now = NOW + 0.25
    leased: dict[str, list[str]] = {"k1": [], "k2": []}
    for advance, key_id, batch, settle_first in steps:
        now += advance
        if settle_first and leased[key_id]:
            settlements = [(rid, 700, 5) for rid in leased[key_id][:3]]
            del leased[key_id][:3]
            assert batched.settle(key_id, now, settlements) == single.settle(key_id, now, settlements)
        one_by_one = [single.admit(key_id, now, [r])[0] for r in batch]
        assert batched.admit(key_id, now, batch) == one_by_one
        assert _same_contents(batched.contents(), single.contents())
        leased[key_id] += [r[0] for r, v in zip(batch, one_by_one) if not isinstance(v, str) and v[0] == 1 and not r[4]]


def test_a_request_with_invalid_arguments_is_refused_alone(two_databases):
    batched, _ = two_databases
    batched.client.flushdb()
    batched.client.set(TEAM.record, json.dumps({"limits": {"rpm": 5}}))
    batched.client.set(TEAM.key_record("k1"), json.dumps({"limits": {}}))
    first, bad, last = batched.admit("k1", NOW, [("a", 10, 0, "m1", 0), ("b", 1.5, 0, "m1", 0), ("c", 10, 0, "m1", 0)])
    assert bad == "admit: invalid tokens"
    assert (first[0], first[4], last[0], last[4]) == (1, "4", 1, "3")
    assert sorted(batched.client.hkeys(TEAM.reservations)) == ["a", "c"]
