"""Usage records and rollups: stored once per request, summed exactly, queried by group."""
from __future__ import annotations

import itertools
import time
from collections import defaultdict

import pytest

from gateway.store.base import Invalid, new_batch_id
from policies.limits import hour_start
from tests.store.conftest import ALL_BACKENDS

pytestmark = pytest.mark.anyio

DAY = 86400
# 2025-01-14T00:00:00Z: the records below spread over three UTC days around it
MIDNIGHT = 1_736_812_800
METRICS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
           "cache_read_input_tokens")


def record(rid: str, ts: float, *, team: str = "team-a", model: str = "m1",
           provider: str = "p1", user: str | None = "u1", session_id: str | None = None,
           tokens: tuple[int, int, int, int] = (100, 50, 0, 0),
           cost: float = 0.01) -> dict:
    return {"request_id": rid, "ts": ts, "team": team, "key_id": "key-1", "user": user,
            "session_id": session_id, "trace": {"trace_id": f"t-{rid}"},
            "model_requested": model, "model": model, "provider": provider, "attempts": 1,
            "status": 200, "streamed": True, **dict(zip(METRICS, tokens)), "cost_usd": cost,
            "latency_ms": 120.0, "ttft_ms": 40.0, "output_tps": 80.0, "estimated": False}


def many_records() -> list[dict]:
    """Three teams, models, providers and users over 60 hours, with uneven amounts."""
    out = []
    for i in range(60):
        out.append(record(
            f"r{i}", MIDNIGHT - 6 * 3600 + i * 3600 + (i * 337) % 3600,
            team=("team-a", "team-b", "team-c")[i % 3], model=("m1", "m2")[i % 2],
            provider=("p1", "p2", "p3")[(i // 2) % 3], user=(None, "u1", "u2", "u3")[i % 4],
            tokens=(i * 7, i * 3 + 1, i % 5, (i * 11) % 13), cost=round(0.001 * (i + 1), 6)))
    return out


def expected_rows(records: list[dict], start: float, end: float, group_by: list[str],
                  team: str | None = None) -> list[dict]:
    """The spec, computed from the records: whole hours that overlap [start, end)."""
    sums: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(
        ("requests", *METRICS, "cost_usd"), 0))
    for r in records:
        hour = hour_start(r["ts"])
        if not (hour < end and hour + 3600 > start) or (team and r["team"] != team):
            continue
        labels = {"team": r["team"], "model": r["model"], "provider": r["provider"],
                  "user": r["user"],
                  "day": time.strftime("%Y-%m-%d", time.gmtime(hour)),
                  "hour": time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour))}
        row = sums[tuple(labels[g] for g in group_by)]
        row["requests"] += 1
        for m in METRICS:
            row[m] += r[m]
        row["cost_usd"] += round(r["cost_usd"] * 1e9)
    rows = []
    for group in sorted(sums, key=lambda g: tuple("" if v is None else str(v) for v in g)):
        row = {**dict(zip(group_by, group)), **sums[group]}
        row["cost_usd"] = round(row["cost_usd"] / 1e9, 9)
        rows.append(row)
    return rows


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_rollups_equal_the_sum_of_the_records_for_every_grouping(store):
    records = many_records()
    assert await store.append_usage(records) == 60
    start, end = MIDNIGHT - 7 * 3600, MIDNIGHT + 3 * DAY
    for size in range(4):
        for group_by in itertools.combinations(["team", "model", "provider", "user", "day"],
                                               size):
            rows = await store.query_usage(start, end, list(group_by))
            assert rows == expected_rows(records, start, end, list(group_by)), group_by


async def test_hourly_grouping_and_partial_ranges_count_whole_hours(store):
    records = many_records()
    await store.append_usage(records)
    # starts mid-hour, crosses midnight, ends mid-hour: hourly buckets at both ends, days between
    start, end = MIDNIGHT - 3 * 3600 - 1200, MIDNIGHT + DAY + 5 * 3600 + 60
    for group_by in (["hour"], ["day", "model"], ["team"], []):
        assert await store.query_usage(start, end, group_by) == \
            expected_rows(records, start, end, group_by)


async def test_time_ranges_exclude_hours_outside_them(store):
    await store.append_usage([record("early", MIDNIGHT + 10 * 3600 + 900),
                              record("late", MIDNIGHT + 11 * 3600 + 2700)])
    only_early = await store.query_usage(MIDNIGHT + 10 * 3600 + 1800, MIDNIGHT + 11 * 3600, [])
    assert [row["requests"] for row in only_early] == [1]
    both = await store.query_usage(MIDNIGHT + 10 * 3600, MIDNIGHT + 11 * 3600 + 1, [])
    assert [row["requests"] for row in both] == [2]
    assert await store.query_usage(MIDNIGHT + 12 * 3600, MIDNIGHT + 13 * 3600, []) == []
    assert await store.query_usage(MIDNIGHT + 11 * 3600, MIDNIGHT + 10 * 3600, []) == []


async def test_team_filter_limits_the_query_to_that_team(store):
    records = many_records()
    await store.append_usage(records)
    start, end = MIDNIGHT - DAY, MIDNIGHT + 3 * DAY
    rows = await store.query_usage(start, end, ["team", "model"], team="team-b")
    assert rows == expected_rows(records, start, end, ["team", "model"], team="team-b")
    assert {row["team"] for row in rows} == {"team-b"}
    assert await store.query_usage(start, end, ["model"], team="nobody") == []


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
async def test_a_batch_appended_twice_is_counted_once(store, replica):
    one = record("r1", MIDNIGHT + 60, cost=0.5)
    batch = new_batch_id()
    assert await store.append_usage([one, one, record("r2", MIDNIGHT + 120, cost=0.25)], batch) == 2
    assert await replica.append_usage([one, record("r2", MIDNIGHT + 120, cost=0.25)], batch) == 0  # a replay
    assert await replica.append_usage([record("r3", MIDNIGHT + 180, cost=0.125)], new_batch_id()) == 1
    rows = await store.query_usage(MIDNIGHT, MIDNIGHT + 3600, [])
    assert (rows[0]["requests"], rows[0]["cost_usd"]) == (3, 0.875)


async def test_malformed_records_and_groupings_are_refused(store):
    for bad in ({"ts": MIDNIGHT, "team": "team-a"}, {"request_id": "r", "team": "team-a"},
                {"request_id": "r", "ts": MIDNIGHT, "team": "{x}"},
                {**record("r", MIDNIGHT), "input_tokens": -1},
                {**record("r", MIDNIGHT), "trace": object()}):
        with pytest.raises(Invalid):
            await store.append_usage([bad])
    with pytest.raises(Invalid):
        await store.query_usage(MIDNIGHT, MIDNIGHT + 3600, ["key_id"])
    assert await store.query_usage(MIDNIGHT - DAY, MIDNIGHT + DAY, []) == []
