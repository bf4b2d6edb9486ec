"""PostgreSQL reads a batch of buffered records into rows itself (one text array, no parse in the
gateway): the rows and hourly sums it makes must be the ones the gateway's own record_row makes,
odd fields included, and a batch it refuses must still land through the row-built path."""
from __future__ import annotations

import orjson
import pytest

from gateway.records import create_record_store
from gateway.records.base import COLUMNS, HOURLY_KEY, HOURLY_SUMS, json_text, record_row
from gateway.records.ingest import write_entries
from tests.records.test_record_store import MARCH_1, record

pytestmark = pytest.mark.anyio

ODD = [
    {"user": "al\x00ice", "trace": {"note": "a\x00b", "path": "c:\\u0000"}},
    {"model": 5, "provider": True, "session_id": ["s"], "key_id": {"k": 1}},
    {"status": "200", "streamed": 1, "input_tokens": "many", "output_tokens": 12.7},
    {"status": 200.0, "streamed": "yes", "cache_read_input_tokens": -3, "cache_creation_input_tokens": 12.5},
    {"status": 99_999_999_999, "streamed": True, "cost_usd": -1, "latency_ms": float("nan")},
    {"status": 404, "cost_usd": 0.1234567891, "latency_ms": 7, "output_tokens": 1e15, "input_tokens": 2**40},
    {"user": None, "model": None, "cost_usd": "free"},
    {},
]


@pytest.fixture
async def pg(postgres_server):
    postgres_server.reset()
    store = create_record_store(postgres_server.url)
    await store.open(migrate=True)
    try:
        yield store
    finally:
        await store.close()


def batch(prefix: str, team: str) -> list[dict]:
    out = [record(f"{prefix}{i}", MARCH_1 + 60 * i, team=team, **extra) for i, extra in enumerate(ODD)]
    out += [record(f"{prefix}{i}", MARCH_1 + 60 * i, team=team) for i in range(len(ODD), len(ODD) + 5)]
    return out


async def rows_of(pg, team: str) -> list[tuple]:
    columns = [c for c in COLUMNS if c not in ("request_id", "team", "record")]
    got = await pg.fetch(f"SELECT {', '.join(columns)}, record::text FROM usage_records WHERE team = $1 "
                         "ORDER BY ts", [team])
    return [(*r[:-1], orjson.loads(r[-1])) for r in got]


async def hourly_of(pg, team: str) -> list[tuple]:
    other = [c for c in HOURLY_KEY + HOURLY_SUMS if c != "team"]
    return await pg.fetch(f"SELECT {', '.join(other)} FROM usage_hourly WHERE team = $1 ORDER BY 1, 2, 3, 4, 5", [team])


def without_ids(rows: list[tuple]) -> list[tuple]:
    return [(*r[:-1], {k: v for k, v in r[-1].items() if k not in ("request_id", "team", "trace")}) for r in rows]


async def test_postgresql_reads_the_rows_record_row_makes(pg):
    by_rows, by_json = batch("py-", "by-rows"), batch("sql-", "by-json")
    raws = [orjson.dumps(r) for r in by_rows]
    assert await pg.insert_rows([record_row(orjson.loads(raw), raw) for raw in raws]) == len(by_rows)
    texts = [json_text(orjson.dumps(r)) for r in by_json]
    assert await pg.insert_json(texts) == len(by_json)
    py, sql = await rows_of(pg, "by-rows"), await rows_of(pg, "by-json")
    assert without_ids(sql) == without_ids(py)
    assert sql[0][2] == "alice" and sql[2][9:11] == (0, 12)  # user_id; input "many" and output 12.7 tokens
    assert await hourly_of(pg, "by-json") == await hourly_of(pg, "by-rows")
    assert await pg.insert_json(texts) == 0  # a replay writes nothing and adds nothing to the sums
    assert await hourly_of(pg, "by-json") == await hourly_of(pg, "by-rows")


async def test_a_batch_the_database_refuses_as_json_lands_as_rows(pg):
    good = [record(f"g{i}", MARCH_1 + i) for i in range(3)]  # a day with no partition made ahead
    entries = [("team-a", f"1-{i}", orjson.dumps(r)) for i, r in enumerate(good)]
    entries.insert(1, ("team-a", "1-9", b"not a record"))
    assert await write_entries(pg, entries) == 3
    [(count,)] = await pg.fetch("SELECT count(*) FROM usage_records", [])
    assert count == 3
