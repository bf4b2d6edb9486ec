"""A refused or failed admission changes nothing: every argument is checked before the first write.

Redis does not roll a script back, so an admission that failed half way would leave a lease, a
concurrency slot or a reservation behind for good. These tests take a snapshot of every counter
of the team (concurrency, reservations, windows, spend) before an admission that must not pass,
and compare it after: in Redis key by key, and in the memory store through what the next
admissions see.
"""
from __future__ import annotations

import math

import pytest
import redis

from gateway.store import keys
from gateway.store.base import MAX_ADMISSION_TOKENS, AdmissionRequest, Invalid
from gateway.store.redis import _script_text
from policies.limits import day_id, month_id
from tests.store.conftest import NOW

pytestmark = pytest.mark.anyio


def ask(rid: str, *, tokens: int = 10, cost: float = 0.01, model: str = "m1", key: str = "key-1",
        now: float = NOW) -> AdmissionRequest:
    return AdmissionRequest(team="team-a", key_id=key, request_id=rid, tokens=tokens, cost_usd=cost,
                            model=model, now=now)


def redis_snapshot(url: str) -> dict:
    """Every key of team-a with its type, contents and whether it expires."""
    client = redis.Redis.from_url(url, decode_responses=True)
    found = {}
    for name in sorted(client.scan_iter(match=keys.TeamKeys("team-a").base + "*")):
        kind = client.type(name)
        value = {"hash": client.hgetall, "zset": lambda n: client.zrange(n, 0, -1, withscores=True),
                 "string": client.get, "set": client.smembers, "stream": lambda n: client.xrange(n)}[kind](name)
        found[name] = (kind, value, client.ttl(name) > 0)
    client.close()
    return found


BAD_NUMBERS = [
    ("tokens", {"tokens": 10**15 * 10**5}),
    ("tokens", {"tokens": -1}),
    ("tokens", {"tokens": 1.5}),
    ("tokens", {"tokens": MAX_ADMISSION_TOKENS + 1}),
    ("cost", {"cost": 2.5e10}),
    ("cost", {"cost": math.inf}),
    ("cost", {"cost": math.nan}),
    ("cost", {"cost": -0.01}),
    ("time", {"now": math.nan}),
    ("models", {"model": "m1\nm2"}),
]


@pytest.mark.parametrize("what,change", BAD_NUMBERS, ids=[f"{w}-{i}" for i, (w, _) in enumerate(BAD_NUMBERS)])
async def test_an_admission_with_numbers_the_counters_cannot_take_is_refused_and_changes_nothing(
        store, store_url, make_team, make_key, what, change):
    await make_team(rpm=100, tpm=10**9, max_concurrent=5, budget_daily_usd=10.0, budget_monthly_usd=100.0)
    await make_key(rpm=50, max_concurrent=3, budget_daily_usd=5.0)
    assert (await store.admit(ask("r1"))).admitted
    before = redis_snapshot(store_url) if store_url else None
    with pytest.raises(Invalid, match=what):
        await store.admit(ask("bad", **change))
    if store_url:
        assert redis_snapshot(store_url) == before
    # Either way the key still has exactly one slot taken and one request in its windows.
    after = await store.admit(ask("r2"))
    assert after.admitted and after.requests_remaining == 48


async def test_refused_admissions_leave_every_counter_as_it_was(store, store_url, make_team, make_key):
    await make_team(rpm=100, tpm=1000, max_concurrent=2, budget_daily_usd=1.0, allowed_models=("m1",))
    await make_key(rpm=3, max_concurrent=2)
    await make_key("key-2", expires_at=NOW - 1)
    assert (await store.admit(ask("r1", cost=0.4))).admitted
    assert (await store.admit(ask("r2", cost=0.4))).admitted
    before = redis_snapshot(store_url) if store_url else None
    refusals = {
        "concurrency": ask("c"),                                  # both slots are taken
        "tpm": ask("t", tokens=2000),
        "model_not_allowed": ask("m", model="m2"),
        "expired": ask("e", key="key-2"),
        "revoked": ask("x", key="key-none"),
    }
    for reason, request in refusals.items():
        verdict = await store.admit(request)
        assert (verdict.admitted, verdict.reason) == (False, reason)
        if store_url:
            assert redis_snapshot(store_url) == before, reason
    # Free one slot: the budget now refuses ($0.8 reserved, $0.4 more would pass $1.0)...
    await store.settle("team-a", "key-1", "r1", 0.4, 10, NOW + 0.1)
    before = redis_snapshot(store_url) if store_url else None
    verdict = await store.admit(ask("b", cost=0.7, now=NOW + 0.2))
    assert (verdict.admitted, verdict.reason) == (False, "budget_daily")
    if store_url:
        assert redis_snapshot(store_url) == before
    # ...and the refusals took no slot, no window entry and no reservation: one more fits exactly.
    verdict = await store.admit(ask("r3", cost=0.2, now=NOW + 0.3))
    assert verdict.admitted and verdict.requests_remaining == 0


# The script's arguments (admit.lua): nine shared, then five per request.
DIRECT_ARGS = ["key-1", repr(NOW + 3600), repr(NOW + 86400), "30.0", "60.0", "60", "1.0", "3456000", repr(NOW),
               "r-direct", "10", "1000", "m1", "0"]


@pytest.mark.parametrize("backend", ["redis"])
@pytest.mark.parametrize("position,value", [(11, "1e400"), (11, "-5"), (11, "2.5"), (12, str(2**64)), (12, "nan"),
                                            (12, "x"), (9, "inf"), (10, "")])
async def test_the_admission_script_checks_its_arguments_before_any_write(
        store, store_url, make_team, make_key, position, value):
    """Called directly, past the Python checks: the script refuses before it writes anything (a
    shared argument fails the call, a request's own one that request)."""
    await make_team(rpm=100, max_concurrent=5, budget_daily_usd=10.0)
    await make_key()
    assert (await store.admit(ask("r1"))).admitted
    tk = keys.TeamKeys("team-a")
    script_keys = [tk.record, tk.key_record("key-1"), tk.window, tk.window_tokens, tk.key_window("key-1"),
                   tk.key_window_tokens("key-1"), tk.leases, tk.key_concurrency, tk.reservations, tk.reserved,
                   tk.spend_day(day_id(NOW)), tk.spend_month(month_id(NOW)), tk.abandoned]
    args = list(DIRECT_ARGS)
    args[position - 1] = value
    before = redis_snapshot(store_url)
    client = redis.Redis.from_url(store_url, decode_responses=True)
    sha = client.script_load(_script_text("admit"))
    if position <= 9:
        with pytest.raises(redis.ResponseError, match="admit: invalid"):
            client.evalsha(sha, len(script_keys), *script_keys, *args)
    else:
        [refused] = client.evalsha(sha, len(script_keys), *script_keys, *args)
        assert refused.startswith("admit: invalid")
    client.close()
    assert redis_snapshot(store_url) == before
