"""Hostile and malformed requests get a 400 naming the field, and cost nobody else anything.

Malformed bodies that used to crash the request path (answered `500 text/plain`), bounds on every
field the gateway keeps in a usage record, a usage record the store cannot encode, a refused
admission that must not leave a concurrency slot behind, and `store_timeout` on admission.
"""
from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import pytest

from gateway.exchange import Exchange, Principal
from gateway.records import create_record_store
from gateway.records.base import RequestFilter
from gateway.records.ingest import BufferDrainer, IngestState
from gateway.request import InboundHeaders, parse_messages_request
from gateway.settings import InputLimits
from gateway.store.base import AdmissionRequest, KeyRecord, Limits, Team, create_store
from gateway.store.rollups import usage_entry
from gateway.usage import Ticket, UsageRecorder
from providers.base import Usage
from tests.conftest import TEAM_KEY, base_settings
from tests.gateway.test_errors import assert_error
from tests.gateway.test_store_outage import DurableRedis
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (session fixture)

MODEL = "claude-sonnet-4-5"
MESSAGES = b'"messages":[{"role":"user","content":"hi"}]'
HI = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
LIMITS = InputLimits()


def body(max_tokens: bytes = b"5", model: bytes = b'"claude-sonnet-4-5"', extra: bytes = b"") -> bytes:
    return b'{"model":' + model + b',"max_tokens":' + max_tokens + b"," + MESSAGES + extra + b"}"


MALFORMED = {
    "messages nested 2,000 deep": (b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":'
                                   + b"[" * 2000 + b"]" * 2000 + b"}", "nested"),
    "an unclosed run of 100,000 [": b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":' + b"[" * 100_000,
    "invalid UTF-8 in model": (body(model=b'"claude-\xff\xfe"'), "model"),
    "max_tokens of 10**15": (body(str(10**15).encode()), "max_tokens"),
    "max_tokens of 2**64": (body(str(2**64).encode()), "max_tokens"),
    "max_tokens of 10**400": (body(b"1" + b"0" * 400), "max_tokens"),
    "max_tokens of 1e400": (body(b"1e400"), "max_tokens"),
    "negative max_tokens": (body(b"-5"), "max_tokens"),
    "zero max_tokens": (body(b"0"), "max_tokens"),
    "float max_tokens": (body(b"5.0"), "max_tokens"),
    "boolean max_tokens": (body(b"true"), "max_tokens"),
    "max_tokens as a string": (body(b'"5"'), "max_tokens"),
    "a lone surrogate in model": (body(model=b'"\\ud800"'), "JSON"),
    "a model id of 100,000 characters": (body(model=b'"' + b"m" * 100_000 + b'"'), "model"),
    "a deep provider object": (body(extra=b',"provider":' + b'{"a":' * 3000 + b"1" + b"}" * 3000), "nested"),
    "invalid UTF-8 in user": (body(extra=b',"user":"\xc3\x28"'), "user"),
    "a price limit of 10**400": (body(extra=b',"provider":{"max_price":{"prompt":1' + b"0" * 400 + b"}}"),
                                 "provider.max_price"),
    "a throughput preference of 10**400": (body(extra=b',"provider":{"preferred_min_throughput":1' + b"0" * 400
                                                + b"}"), "provider.preferred_min_throughput"),
    # A repeated member makes the gateway re-encode the body for the upstream: what the encoder
    # cannot write is then the client's to fix.
    "a repeated member and messages nested 300 deep": (
        b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[' + b"[" * 300 + b"]" * 300
        + b'],"max_tokens":6}', "repeats a member"),
    "a repeated member and a surrogate encoded as UTF-8": (
        body(extra=b',"system":"\xed\xa0\x80","max_tokens":6'), "repeats a member"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_bodies_get_a_400_in_the_envelope(client, name):
    case = MALFORMED[name]
    raw, field = case if isinstance(case, tuple) else (case, "")
    response = client.post("/v1/messages", content=raw, headers={"content-type": "application/json"})
    assert response.headers["content-type"] == "application/json"
    error = assert_error(response, 400, "invalid_request_error")
    assert field in error["message"]


def test_max_tokens_above_the_models_maximum_output_is_refused_naming_both(client, upstream):
    # anthropic/claude-sonnet-4.5 writes at most 64,000 tokens (the catalog's max_output).
    error = assert_error(client.post("/v1/messages", json={**HI, "max_tokens": 64_001}), 400,
                         "invalid_request_error")
    assert "max_tokens" in error["message"] and "64000" in error["message"]
    assert upstream.requests == []
    assert client.post("/v1/messages", json={**HI, "max_tokens": 64_000}).status_code == 200


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


OVER_LIMITS = {
    "trace nested 300 deep": ({"trace": nested(300)}, {}, "trace"),
    "trace one level too deep": ({"trace": nested(LIMITS.trace_depth + 1)}, {}, "trace"),
    "trace with too many keys": ({"trace": {f"k{i}": i for i in range(LIMITS.trace_keys + 1)}}, {}, "trace"),
    "trace with too many array items": ({"trace": {"list": list(range(LIMITS.trace_keys))}}, {}, "trace"),
    "trace over its byte limit": ({"trace": {"blob": "x" * LIMITS.trace_bytes}}, {}, "trace"),
    "trace of 10 MB": ({"trace": {"blob": "x" * 10_000_000}}, {}, "trace"),
    "an integer in trace past 64 bits": ({"trace": {"n": 2**64}}, {}, "trace"),
    "session_id too long": ({"session_id": "s" * (LIMITS.id_chars + 1)}, {}, "session_id"),
    "user too long": ({"user": "u" * (LIMITS.id_chars + 1)}, {}, "user"),
    "x-session-id header too long": ({}, {"x-session-id": "s" * (LIMITS.id_chars + 1)}, "x-session-id"),
    "metadata.user_id too long": ({"metadata": {"user_id": "u" * (LIMITS.metadata_user_id_chars + 1)}}, {},
                                  "metadata.user_id"),
    "metadata.user_id not a string": ({"metadata": {"user_id": {"deep": [1]}}}, {}, "metadata.user_id"),
    "too many fallback models": ({"models": [MODEL] * (LIMITS.fallback_models + 1)}, {}, "models"),
    "a fallback model id too long": ({"models": ["m" * (LIMITS.model_chars + 1)]}, {}, "models"),
}


@pytest.mark.parametrize("name", list(OVER_LIMITS))
def test_every_field_kept_in_usage_is_bounded_with_a_400_naming_it(client, upstream, name):
    extra, headers, field = OVER_LIMITS[name]
    error = assert_error(client.post("/v1/messages", json={**HI, **extra}, headers=headers), 400,
                         "invalid_request_error")
    assert field in error["message"]
    assert upstream.requests == []


def test_fields_at_their_limits_are_accepted(client, upstream):
    at_limits = {
        "trace": {"trace_id": "t" * 100, "tags": list(range(20)), "deep": nested(LIMITS.trace_depth - 1)},
        "session_id": "s" * LIMITS.id_chars, "user": "u" * LIMITS.id_chars,
        "metadata": {"user_id": "u" * LIMITS.metadata_user_id_chars},
        "models": [MODEL] * LIMITS.fallback_models,
    }
    assert client.post("/v1/messages", json={**HI, **at_limits}).status_code == 200


def test_limits_are_configurable(anthropic_upstream):
    anthropic_upstream.reset()
    settings = base_settings(anthropic_upstream.url, input_limits={"trace_bytes": 64, "max_tokens": 10})
    with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY}) as c:
        assert "at most 64 bytes" in assert_error(c.post("/v1/messages", json={**HI, "trace": {"a": "b" * 64}}),
                                                  400, "invalid_request_error")["message"]
        assert "at most 10" in assert_error(c.post("/v1/messages", json={**HI, "max_tokens": 11}),
                                            400, "invalid_request_error")["message"]
        assert c.post("/v1/messages", json={**HI, "max_tokens": 10}).status_code == 200


# -- a refused request must not leave a concurrency slot behind ------------------------------------
def test_a_huge_max_tokens_leaves_no_concurrency_slot_taken(redis_server, postgres_server, anthropic_upstream,  # noqa: F811
                                                            tmp_path):
    redis_server.flush()
    postgres_server.reset()
    anthropic_upstream.reset()
    settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                             usage_spill_path=str(tmp_path / "spill.jsonl"),
                             teams=[{"name": "team-a", "max_concurrent": 1}])
    with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY}) as c:
        for huge in (10**15, 2**64, 10**400):
            assert_error(c.post("/v1/messages", json={**HI, "max_tokens": huge}), 400, "invalid_request_error")
        for _ in range(3):
            assert c.post("/v1/messages", json=HI).status_code == 200
            time.sleep(0.2)  # the slot frees when the request is settled, just after its answer
    leases = redis_server.client().zcard("gw:{team-a}:leases")
    assert leases == 0


# -- store_timeout bounds admission --------------------------------------------------------------
# Alone: the wait is bounded to within 0.35 s of the timeout, less than another worker's load can add.
@pytest.mark.alone
@pytest.mark.parametrize("timeout", [0.15, 0.4])
def test_admission_gives_up_after_store_timeout_when_redis_does_not_answer(anthropic_upstream, postgres_server,  # noqa: F811
                                                                            tmp_path, timeout):
    anthropic_upstream.reset()
    postgres_server.reset()
    with RedisServer() as server:
        settings = base_settings(anthropic_upstream.url, redis_url=server.url, usage_db_url=postgres_server.url,
                                 store_outage="fail_closed",
                                 store_timeout=timeout, usage_spill_path=str(tmp_path / "spill.jsonl"))
        with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY},
                                                           timeout=10) as c:
            assert c.post("/v1/messages", json=HI).status_code == 200
            server.pause()
            try:
                started = time.monotonic()
                response = c.post("/v1/messages", json=HI)
                waited = time.monotonic() - started
            finally:
                server.resume()
    assert_error(response, 529, "overloaded_error")
    assert timeout * 0.9 <= waited < timeout + 0.35, f"waited {waited:.2f} s with store_timeout {timeout}"


# -- a record the store cannot encode never costs its batch ----------------------------------------
def exchange(request_id: str, team: str, key_id: str, *, cost: float, trace: dict | None = None) -> Exchange:
    raw = b'{"model":"claude-sonnet-4-5","max_tokens":5,' + MESSAGES + b"}"
    headers = InboundHeaders([], None, None, None, None)
    ex = Exchange(request_id, headers, "", principal=Principal(key_id=key_id, team=team),
                  request=parse_messages_request(raw, headers))
    if trace is not None:
        ex.request.trace = trace  # past the parse-time bounds, as a defect elsewhere might let through
    ex.status, ex.cost_usd, ex.plan_model = 200, cost, "anthropic/claude-sonnet-4.5"
    ex.usage = Usage(input_tokens=10, output_tokens=5)
    return ex


POISONS = {"nested 300 deep": nested(300), "an integer past 64 bits": {"n": 2**70},
           "a lone surrogate": {"s": "\ud800"}, "an object": {"o": object()}}


async def _poisoned_batch(store, recorder: UsageRecorder, poison: dict, count: int) -> list[str]:
    """`count` admitted requests of two teams finish in one batch; one of them carries `poison`."""
    for team in ("team-a", "team-b"):
        await store.create_team(Team(name=team, limits=Limits(budget_daily_usd=100.0), created_at=time.time()))
        await store.create_key(KeyRecord(id=f"key-{team}", team=team, prefix=f"sk-{team}",
                                         secret_hash=hashlib.sha256(team.encode()).hexdigest(), created_at=time.time()))
    ids = []
    for i in range(count):
        team = "team-a" if i % 2 else "team-b"
        rid = f"req_{i:04d}"
        admitted = await store.admit(AdmissionRequest(team=team, key_id=f"key-{team}", request_id=rid,
                                                      tokens=100, cost_usd=0.5, model="m", now=time.time()))
        assert admitted.admitted
        ex = exchange(rid, team, f"key-{team}", cost=0.01, trace=poison if i == count // 2 else None)
        recorder.finish(ex, Ticket(team, f"key-{team}", rid))
        ids.append(rid)
    return ids


async def _drained_records(store, db_url: str) -> dict[str, dict]:
    """What the Redis usage buffers hold, moved into the record store as a replica's drainer does;
    every record there, by request id."""
    database = create_record_store(db_url)
    await database.open(migrate=True)
    try:
        drainer = BufferDrainer(store, database, IngestState(database.kind))
        for _ in range(100):  # a batch at a time (the first call may only claim), until nothing waits
            await drainer.drain_once()
            if not await store.buffer_length(await store.buffer_teams()):
                break
        found, _ = await database.requests(RequestFilter(), limit=10_000)
    finally:
        await database.close()
    records = {r["request_id"]: r for r in found}
    assert len(records) == len(found), "no record is stored twice"
    return records


async def _assert_all_landed(store, db_url: str, ids: list[str], poisoned: str) -> None:
    records = await _drained_records(store, db_url)
    assert set(records) == set(ids)
    assert "record_error" in records[poisoned] and records[poisoned]["cost_usd"] == 0.01
    assert all("record_error" not in r for rid, r in records.items() if rid != poisoned)
    # Every settlement landed too: reservations released, the actual cost charged.
    now = time.time()
    rows = {row["team"]: row for row in await store.query_usage(now - 3600, now + 60, ["team"])}
    assert rows["team-a"]["requests"] + rows["team-b"]["requests"] == len(ids)
    for team in ("team-a", "team-b"):
        # Budget left: a $100 reservation fits only if nothing is still reserved and spend is $0.01 each.
        spent = sum(0.01 for rid in ids if records[rid]["team"] == team)
        verdict = await store.admit(AdmissionRequest(team=team, key_id=f"key-{team}", request_id=f"probe-{team}",
                                                     tokens=1, cost_usd=round(100.0 - spent, 9), model="m",
                                                     now=now))
        assert verdict.admitted, team
        over = await store.admit(AdmissionRequest(team=team, key_id=f"key-{team}", request_id=f"over-{team}",
                                                  tokens=1, cost_usd=0.000001, model="m", now=now))
        assert (over.admitted, over.reason) == (False, "budget_daily")


@pytest.mark.parametrize("poison", list(POISONS))
def test_one_unencodable_record_among_many_leaves_every_other_record_and_settlement_in_redis(
        redis_server, postgres_server, tmp_path, poison):  # noqa: F811
    redis_server.flush()
    postgres_server.reset()

    async def run() -> None:
        store = create_store(redis_server.url)
        recorder = UsageRecorder(store, tmp_path / "spill.jsonl")
        try:
            ids = await _poisoned_batch(store, recorder, POISONS[poison], 200)
            await recorder.flush()
            await _assert_all_landed(store, postgres_server.url, ids, ids[100])
            assert not recorder.spill.pending()
        finally:
            await store.close()
    asyncio.run(run())


def test_an_unencodable_record_does_not_stop_the_spill_file_or_its_replay(postgres_server, tmp_path):  # noqa: F811
    spill = tmp_path / "spill.jsonl"
    postgres_server.reset()

    async def run(server: RedisServer) -> None:
        store = create_store(server.url, socket_timeout=0.3, connect_timeout=0.3, operation_timeout=0.3)
        recorder = UsageRecorder(store, spill)
        try:
            ids = await _poisoned_batch(store, recorder, POISONS["nested 300 deep"], 40)
            server.stop()
            await recorder.flush()  # Redis is down: the whole batch goes to the spill file
            assert len(recorder.spill.own.read_bytes().splitlines()) == 80  # 40 records and 40 settlements
            server.start()
            for _ in range(50):  # each flush replays the spill file once Redis answers again
                await recorder.flush()
                if not recorder.spill.pending():
                    break
                await asyncio.sleep(0.1)
            assert not recorder.spill.pending()
            await _assert_all_landed(store, postgres_server.url, ids, ids[20])
        finally:
            await store.close()

    with DurableRedis() as server:  # keeps teams and reservations across the outage
        asyncio.run(run(server))


def test_the_store_still_refuses_a_record_it_cannot_encode():
    """The recorder, not the store, replaces bad records: the store's contract is unchanged."""
    with pytest.raises(ValueError):
        usage_entry({"request_id": "r", "ts": time.time(), "team": "team-a", "trace": nested(300)})


def test_a_request_refused_before_its_body_is_read_keeps_no_overlong_session_header(
        redis_server, postgres_server, anthropic_upstream, tmp_path):  # noqa: F811
    from tests.gateway.test_usage_recording import records
    redis_server.flush()
    postgres_server.reset()
    settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                             usage_spill_path=str(tmp_path / "spill.jsonl"))
    with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY}) as c:
        for session in ("s" * 100_000, "sess-short"):
            assert_error(c.post("/v1/messages", content=b'{"model": ', headers={"x-session-id": session}), 400,
                         "invalid_request_error")
        kept = records(postgres_server.url, "team-a", 2)
    assert sorted(r["session_id"] or "" for r in kept) == ["", "sess-short"]
