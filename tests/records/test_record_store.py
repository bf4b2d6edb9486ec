"""The record store's queries against known data, on SQLite and PostgreSQL alike: usage grouped by
every field, the paged request log, sessions, the streaming export; idempotent writes, retention,
and records that a database would refuse."""
from __future__ import annotations

import time

import orjson
import pytest

from gateway.records import create_record_store
from gateway.records.base import RequestFilter, record_row
from gateway.records.ingest import write_rows
from gateway.store.base import Invalid

pytestmark = pytest.mark.anyio

MARCH_1 = 1740787200  # 2025-03-01T00:00:00Z
HOUR, DAY = 3600, 86400


def record(rid: str, ts: float, *, team: str = "team-a", model: str = "m1", provider: str = "p1",
           user: str | None = "u1", key_id: str = "key-1", session_id: str | None = None, status: int = 200,
           tokens: tuple[int, int, int, int] = (100, 50, 5, 20), cost: float = 0.01, **extra) -> dict:
    return {"request_id": rid, "ts": ts, "team": team, "key_id": key_id, "user": user, "session_id": session_id,
            "trace": {"trace_id": f"t-{rid}"}, "model_requested": model, "model": model, "provider": provider,
            "attempts": [{"provider": provider, "model": model, "outcome": "ok"}], "status": status,
            "error_type": None, "streamed": False, "input_tokens": tokens[0], "output_tokens": tokens[1],
            "cache_creation_input_tokens": tokens[2], "cache_read_input_tokens": tokens[3], "cost_usd": cost,
            "latency_ms": 120.5, "ttft_ms": 40.0, "output_tps": 80.0, "estimated": False, "limited_by": None, **extra}


KNOWN = [
    record("a1", MARCH_1 + 1 * HOUR + 10, user="u1", cost=0.25),
    record("a2", MARCH_1 + 1 * HOUR + 20, user="u2", key_id="key-2", cost=0.5),
    record("a3", MARCH_1 + DAY + 60, model="m2", provider="p2", user="u1", cost=1.0, status=429),
    record("b1", MARCH_1 + 600, team="team-b", user=None, tokens=(1, 1, 0, 0), cost=0.125, status=502),
]


async def test_usage_sums_group_by_every_field(db):
    assert await db.insert(KNOWN) == 4
    start, end = MARCH_1, MARCH_1 + 2 * DAY
    assert await db.summary(start, end, ["team", "model"]) == [
        {"team": "team-a", "model": "m1", "requests": 2, "input_tokens": 200, "output_tokens": 100,
         "cache_creation_input_tokens": 10, "cache_read_input_tokens": 40, "cost_usd": 0.75},
        {"team": "team-a", "model": "m2", "requests": 1, "input_tokens": 100, "output_tokens": 50,
         "cache_creation_input_tokens": 5, "cache_read_input_tokens": 20, "cost_usd": 1.0},
        {"team": "team-b", "model": "m1", "requests": 1, "input_tokens": 1, "output_tokens": 1,
         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "cost_usd": 0.125},
    ]
    by = {}
    for group in ("provider", "user", "key", "day", "hour"):
        by[group] = [(r[group], r["requests"], r["cost_usd"]) for r in await db.summary(start, end, [group])]
    assert by["provider"] == [("p1", 3, 0.875), ("p2", 1, 1.0)]
    assert by["user"] == [(None, 1, 0.125), ("u1", 2, 1.25), ("u2", 1, 0.5)]
    assert by["key"] == [("key-1", 3, 1.375), ("key-2", 1, 0.5)]
    assert by["day"] == [("2025-03-01", 3, 0.875), ("2025-03-02", 1, 1.0)]
    assert by["hour"] == [("2025-03-01T00:00:00Z", 1, 0.125), ("2025-03-01T01:00:00Z", 2, 0.75),
                          ("2025-03-02T00:00:00Z", 1, 1.0)]
    [total] = await db.summary(start, end, [])
    assert (total["requests"], total["cost_usd"]) == (4, 1.875)


async def test_usage_ranges_are_exact_and_a_team_filter_keeps_its_own(db):
    await db.insert(KNOWN)
    rows = await db.summary(MARCH_1 + HOUR + 15, MARCH_1 + DAY, ["user"], team="team-a")
    assert [(r["user"], r["requests"]) for r in rows] == [("u2", 1)]
    assert await db.summary(MARCH_1 - DAY, MARCH_1, []) == []
    with pytest.raises(Invalid):
        await db.summary(MARCH_1, MARCH_1 + DAY, ["colour"])


async def test_costs_sum_in_nano_dollars_exactly(db):
    await db.insert([record(f"r{i}", MARCH_1 + i, cost=0.1) for i in range(30)])
    [total] = await db.summary(MARCH_1, MARCH_1 + DAY, [])
    assert total["cost_usd"] == 3.0  # thirty times 0.1, not 3.0000000000000004


async def test_a_record_written_twice_is_stored_once(db):
    assert await db.insert(KNOWN[:2]) == 2
    assert await db.insert(KNOWN) == 2  # a replay of the first two, and two new ones
    assert await db.count() == 4
    assert await db.insert([record("twice", MARCH_1 + 99)] * 2) == 1  # a batch repeating a record
    [total] = await db.summary(MARCH_1, MARCH_1 + 2 * DAY, [])
    assert total["requests"] == 5


async def test_the_request_log_pages_newest_first_with_filters(db):
    many = [record(f"r{i:02}", MARCH_1 + i * 60, model=("m1", "m2")[i % 2], status=(200, 429, 503)[i % 3],
                   team=("team-a", "team-b")[i % 4 == 3]) for i in range(25)]
    await db.insert(many)
    seen, cursor = [], None
    while True:
        page, cursor = await db.requests(RequestFilter(team="team-a"), cursor=cursor, limit=7)
        seen += [r["request_id"] for r in page]
        assert len(page) <= 7
        if cursor is None:
            break
    expected = [r["request_id"] for r in sorted(many, key=lambda r: -r["ts"]) if r["team"] == "team-a"]
    assert seen == expected
    page, _ = await db.requests(RequestFilter(model="m2", status=429))
    assert [r["request_id"] for r in page] == [r["request_id"] for r in many[::-1]
                                                if r["model"] == "m2" and r["status"] == 429]
    page, _ = await db.requests(RequestFilter(status=500, status_class=True, start=MARCH_1 + 300,
                                              end=MARCH_1 + 900))
    assert [r["request_id"] for r in page] == ["r14", "r11", "r08", "r05"]  # the 5xx of minutes 5 to 14
    [first], _ = await db.requests(RequestFilter(), limit=1)
    assert first == orjson.loads(orjson.dumps(many[-1]))  # read back as written


async def test_a_cursor_that_is_not_ours_is_refused(db):
    with pytest.raises(Invalid):
        await db.requests(RequestFilter(), cursor="not-a-cursor")


async def test_a_session_lists_its_records_newest_first(db):
    await db.insert([record("s1", MARCH_1 + 10, session_id="sess"), record("s2", MARCH_1 + 20, session_id="sess"),
                     record("s3", MARCH_1 + 30, session_id="other"),
                     record("s4", MARCH_1 + 40, session_id="sess", team="team-b")])
    assert [r["request_id"] for r in await db.session("sess")] == ["s4", "s2", "s1"]
    assert [r["request_id"] for r in await db.session("sess", team="team-a", limit=1)] == ["s2"]
    assert (await db.session("sess"))[2]["trace"] == {"trace_id": "t-s1"}


async def test_the_export_streams_every_record_in_order_a_page_at_a_time(db):
    many = [record(f"e{i:03}", MARCH_1 + (i * 7919) % 500) for i in range(120)]
    await db.insert(many)
    exported = [r async for r in db.export(MARCH_1 + 100, MARCH_1 + 400, page=16)]
    expected = sorted((r for r in many if MARCH_1 + 100 <= r["ts"] < MARCH_1 + 400),
                      key=lambda r: (r["ts"], r["request_id"]))
    assert [r["request_id"] for r in exported] == [r["request_id"] for r in expected]


async def test_nul_characters_and_odd_fields_never_fail_a_batch(db):
    odd = record("odd", MARCH_1 + 5, user="al\x00ice", trace={"note": "a\x00b", "path": "c:\\u0000"},
                 input_tokens="many", status="200", latency_ms=float("nan"))
    assert await write_rows(db, [record_row(odd), record_row(record("fine", MARCH_1 + 6))]) == 2
    page, _ = await db.requests(RequestFilter())
    stored = {r["request_id"]: r for r in page}
    assert stored["odd"]["trace"]["path"] == "c:\\u0000"  # an escaped backslash is not a NUL
    [row] = [r for r in await db.summary(MARCH_1, MARCH_1 + DAY, ["user"]) if r["user"] == "alice"]
    assert row["input_tokens"] == 0  # a count that is not a number counts as none


async def test_retention_removes_what_is_older_than_the_cutoff(db):
    now = time.time()
    today = int(now // DAY) * DAY
    await db.insert([record("old", today - 40 * DAY + 5), record("edge", today - 30 * DAY + 5),
                     record("new", now - 60)])
    if db.kind == "postgresql":
        from gateway.records.postgres import partition_name
        assert partition_name(today - 40 * DAY) in await db.partitions()
    removed = await db.maintain(now, retention_days=30)
    assert removed >= 1
    page, _ = await db.requests(RequestFilter())
    assert sorted(r["request_id"] for r in page) == ["edge", "new"]
    if db.kind == "postgresql":  # whole partitions went, and today's and tomorrow's are made ahead
        partitions = await db.partitions()
        assert partition_name(today - 40 * DAY) not in partitions
        assert {partition_name(today - 30 * DAY), partition_name(today), partition_name(today + DAY)} <= set(partitions)


async def _insert_raw(store, columns: tuple[str, ...], values: tuple) -> None:
    """A row written the way an earlier schema version's gateway wrote it (no hourly sums)."""
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1)) if store.kind == "postgresql" \
        else ", ".join("?" * len(values))
    await store.fetch(f"INSERT INTO usage_records ({', '.join(columns)}) VALUES ({marks})", list(values))


async def test_migrations_run_from_an_empty_database_and_from_each_previous_version(db_url):
    from gateway.records.base import COLUMNS
    from gateway.records.schema import LATEST
    store = create_record_store(db_url)
    await store.open(migrate=False)
    try:
        assert await store.upgrade(1) == (0, 1)
        if store.kind == "postgresql":
            from gateway.records.postgres import partition_name
            await store.fetch(f"CREATE TABLE {partition_name(MARCH_1)} PARTITION OF usage_records "
                              f"FOR VALUES FROM ({MARCH_1}) TO ({MARCH_1 + DAY})", [])
        # Version 1 had no key_id column.
        v1 = tuple(c for c in COLUMNS if c != "key_id")
        row = record_row(record("v1", MARCH_1 + 30, key_id="key-old", cost=0.5))
        await _insert_raw(store, v1, tuple(v for c, v in zip(COLUMNS, row) if c != "key_id"))
        assert await store.upgrade(2) == (1, 2)
        # Version 2 had no hourly sums.
        await _insert_raw(store, COLUMNS, record_row(record("v2", MARCH_1 + 7200, key_id="key-old", cost=0.25)))
        assert await store.upgrade() == (2, LATEST)
        assert await store.schema_version() == LATEST
        assert await store.upgrade() == (LATEST, LATEST)
        [row] = await store.summary(MARCH_1, MARCH_1 + DAY, ["key"])  # whole hours: the hourly sums
        assert (row["key"], row["requests"], row["cost_usd"]) == ("key-old", 2, 0.75)  # filled from the records
        assert await store.insert([record("v3", MARCH_1 + 40, key_id="key-old")]) == 1
        [row] = await store.summary(MARCH_1, MARCH_1 + DAY, ["key"])
        assert row["requests"] == 3
    finally:
        await store.close()


async def test_whole_hours_come_from_the_hourly_sums_and_the_edges_from_the_records(db):
    await db.insert([record(f"h{i}", MARCH_1 + i * 600, cost=0.01 * (i + 1)) for i in range(36)])  # six hours
    for start, end in ((MARCH_1, MARCH_1 + 6 * HOUR), (MARCH_1 + 900, MARCH_1 + 5 * HOUR + 1),
                       (MARCH_1 + 1200, MARCH_1 + 1800), (MARCH_1 + 3 * HOUR, MARCH_1 + 4 * HOUR - 1)):
        expected = [i for i in range(36) if start <= MARCH_1 + i * 600 < end]
        [row] = await db.summary(start, end, ["team"])
        assert row["requests"] == len(expected), (start, end)
        assert row["cost_usd"] == round(sum(0.01 * (i + 1) for i in expected), 9)
    rows = await db.summary(MARCH_1 + 1800, MARCH_1 + 2 * HOUR + 1200, ["hour"])
    assert [(r["hour"], r["requests"]) for r in rows] == [("2025-03-01T00:00:00Z", 3), ("2025-03-01T01:00:00Z", 6),
                                                          ("2025-03-01T02:00:00Z", 2)]
    # A replay adds nothing to the sums either.
    await db.insert([record(f"h{i}", MARCH_1 + i * 600, cost=0.01 * (i + 1)) for i in range(36)])
    [row] = await db.summary(MARCH_1, MARCH_1 + DAY, [])
    assert row["requests"] == 36
