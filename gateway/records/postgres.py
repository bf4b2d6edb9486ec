"""PostgreSQL record store (asyncpg): the system of record when replicas share state.

`usage_records` is partitioned by range of `ts`, one partition per UTC day
(`usage_records_dYYYYMMDD`), made before the first row of its day is written (today's and
tomorrow's ahead, by `maintain`); retention drops whole partitions. A batch is one statement,
`INSERT ... SELECT * FROM unnest($1::text[], ...) ON CONFLICT DO NOTHING`: one round trip and one
plan whatever the batch size (measured against executemany and psycopg in the README).
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.records.base import (
    COLUMNS, HOURLY_KEY, HOURLY_SUMS, MAX_COUNT, SUMS, RecordRejected, RecordStore, RecordStoreUnavailable, hourly_rows, hourly_upsert,
    new_rows, retention_cutoff,
)
from gateway.records.schema import LATEST, VERSION_TABLE, pending
from gateway.store.base import StoreError

_TYPES = {"request_id": "text", "ts": "float8", "team": "text", "key_id": "text", "user_id": "text",
          "session_id": "text", "model_requested": "text", "model": "text", "provider": "text", "status": "int4",
          "streamed": "bool", "input_tokens": "int8", "output_tokens": "int8", "cache_creation_input_tokens": "int8",
          "cache_read_input_tokens": "int8", "cost_nanos": "int8", "latency_ms": "float8", "record": "json"}
_INSERT = (f"INSERT INTO usage_records ({', '.join(COLUMNS)}) SELECT * FROM unnest("
           + ", ".join(f"${i}::{_TYPES[c]}[]" for i, c in enumerate(COLUMNS, 1))
           + ") ON CONFLICT DO NOTHING")
_HOURLY_TYPES = ("int8", "text", "text", "text", "text", "text", *("int8",) * len(HOURLY_SUMS))
_HOURLY = hourly_upsert("SELECT * FROM unnest(" + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_HOURLY_TYPES, 1))
                        + ")")
assert len(_HOURLY_TYPES) == len(HOURLY_KEY) + len(HOURLY_SUMS)


def _json_text(field: str) -> str:
    return f"CASE WHEN jsonb_typeof(r->'{field}') = 'string' THEN r->>'{field}' END"


def _json_count(field: str) -> str:
    return (f"CASE WHEN jsonb_typeof(r->'{field}') = 'number' AND (r->>'{field}')::numeric >= 0 "
            f"THEN LEAST(trunc((r->>'{field}')::numeric), {MAX_COUNT})::int8 ELSE 0 END")


def _json_number(field: str) -> str:
    return f"CASE WHEN jsonb_typeof(r->'{field}') = 'number' THEN (r->>'{field}')::float8 END"


# The row of each record, read by PostgreSQL from the record's JSON with record_row's rules, so
# that a batch costs the gateway one text array instead of a parse and a row per record.
_ROW_FROM_JSON = {
    "request_id": _json_text("request_id"), "ts": "(r->>'ts')::float8", "team": _json_text("team"),
    "key_id": _json_text("key_id"), "user_id": _json_text("user"), "session_id": _json_text("session_id"),
    "model_requested": _json_text("model_requested"), "model": _json_text("model"),
    "provider": _json_text("provider"),
    "status": "CASE WHEN jsonb_typeof(r->'status') = 'number' AND (r->>'status') ~ '^-?[0-9]+$' "
              "AND (r->>'status')::numeric BETWEEN -2147483648 AND 2147483647 THEN (r->>'status')::int4 ELSE 0 END",
    "streamed": "coalesce(r->'streamed' = 'true'::jsonb, false)",
    **{c: _json_count(c) for c in SUMS},
    "cost_nanos": "CASE WHEN jsonb_typeof(r->'cost_usd') = 'number' "
                  "THEN floor(GREATEST((r->>'cost_usd')::float8, 0) * 1e9::float8 + 0.5)::int8 ELSE 0 END",
    "latency_ms": _json_number("latency_ms"),
    "record": "j::json",
}
assert tuple(_ROW_FROM_JSON) == COLUMNS
_HOURLY_KEY_SQL = ("(floor(ts / 3600) * 3600)::int8", "team",
                   *(f"coalesce({c}, '')" for c in HOURLY_KEY[2:]))
# One statement: the rows (each record parsed once: MATERIALIZED, or every field's reference
# would parse it again), and the hourly sums of those that were new, in one transaction. The sums
# are added in key order (by code point, as the other writers sort them) so that concurrent writers
# lock the same sums in the same order.
_INSERT_JSON = (
    "WITH src AS MATERIALIZED (SELECT j, j::jsonb AS r FROM unnest($1::text[]) AS t(j)), "
    f"ins AS (INSERT INTO usage_records ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(_ROW_FROM_JSON.values())} FROM src ON CONFLICT DO NOTHING "
    f"RETURNING {', '.join(HOURLY_KEY[1:] + SUMS)}, ts, cost_nanos), "
    "hourly AS (" + hourly_upsert(
        f"SELECT {', '.join(_HOURLY_KEY_SQL)}, count(*), "
        + ", ".join(f"sum({c})::int8" for c in (*SUMS, "cost_nanos"))
        + " FROM ins GROUP BY " + ", ".join(str(i) for i in range(1, len(HOURLY_KEY) + 1))
        + " ORDER BY " + ", ".join([_HOURLY_KEY_SQL[0], *(f'{k} COLLATE "C"' for k in _HOURLY_KEY_SQL[1:])]))
    + ") SELECT count(*) FROM ins")
_PARTITION = re.compile(r"usage_records_d(\d{8})")
_LOCK_ID = 0x6761_7465  # one advisory lock for schema changes and partition DDL, across replicas
# SQLSTATE classes that mean "the server, not the statement": connection, resources, operator.
_UNAVAILABLE_CLASSES = ("08", "53", "57")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _UNAVAILABLE_CLASSES


def partition_name(day_start: int) -> str:
    return "usage_records_d" + datetime.fromtimestamp(day_start, tz=UTC).strftime("%Y%m%d")


def partition_day(name: str) -> int | None:
    m = _PARTITION.fullmatch(name)
    if m is None:
        return None
    return int(datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC).timestamp())


class PostgresRecordStore(RecordStore):
    kind = "postgresql"
    placeholder = "$"
    reads_json = True

    def __init__(self, url: str, *, timeout: float = 10.0, pool_size: int = 4) -> None:
        self.url = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.timeout = timeout
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()
        self._partitions: set[int] = set()  # day starts known to have a partition
        self._migrate = True

    # -- connections -----------------------------------------------------------------------------
    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._connecting:
            if self._pool is None:
                pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size,
                                                 command_timeout=self.timeout, timeout=self.timeout)
                try:
                    if self._migrate:
                        await self._upgrade_on(pool, None)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self.timeout) as conn:
                yield conn
        except (StoreError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if _unavailable(exc):
                raise RecordStoreUnavailable(f"postgresql unavailable: {type(exc).__name__}: {exc}") from exc
            if isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in ("22", "23"):
                raise RecordRejected(f"postgresql refused the rows: {exc}") from exc
            raise StoreError(f"postgresql: {type(exc).__name__}: {exc}") from exc

    async def open(self, *, migrate: bool) -> None:
        self._migrate = migrate
        with contextlib.suppress(RecordStoreUnavailable):
            async with self._connection():
                pass

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    # -- schema ----------------------------------------------------------------------------------
    async def _version(self, conn: asyncpg.Connection) -> int:
        await conn.execute(VERSION_TABLE)
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM usage_schema"))

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            return await self._version(conn)

    async def upgrade(self, target: int | None = None) -> tuple[int, int]:
        if self._pool is None:
            migrate, self._migrate = self._migrate, False
            try:
                async with self._connection():
                    pass
            finally:
                self._migrate = migrate
        assert self._pool is not None
        try:
            return await self._upgrade_on(self._pool, target)
        except asyncpg.PostgresError as exc:
            raise StoreError(f"postgresql: migration failed: {exc}") from exc

    async def _upgrade_on(self, pool: asyncpg.Pool, target: int | None) -> tuple[int, int]:
        async with pool.acquire(timeout=self.timeout) as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)  # replicas start together
                before = await self._version(conn)
                for version, statements in pending("postgresql", before, target):
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO usage_schema VALUES ($1, $2)", version, time.time())
                after = await self._version(conn)
        return before, after

    # -- writing ---------------------------------------------------------------------------------
    async def _ensure_partitions(self, conn: asyncpg.Connection, days: set[int]) -> None:
        missing = days - self._partitions
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            for day in sorted(missing):
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF usage_records "
                                   f"FOR VALUES FROM ({day}) TO ({day + 86400})")
        self._partitions |= missing

    async def insert_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        columns = [list(c) for c in zip(*rows)]
        async with self._connection() as conn:
            await self._ensure_partitions(conn, {int(ts // 86400) * 86400 for ts in columns[1]})
            async with conn.transaction():  # the rows and their hourly sums, together or not at all
                inserted = await conn.fetch(_INSERT + " RETURNING ts, request_id", *columns)
                hourly = hourly_rows(new_rows(rows, {(r[0], r[1]) for r in inserted}))
                if hourly:
                    await conn.execute(_HOURLY, *[list(c) for c in zip(*hourly)])
        return len(inserted)

    async def insert_json(self, texts: Sequence[str]) -> int:
        """Records given as their JSON texts (see json_text), read into rows by the database."""
        if not texts:
            return 0
        async with self._connection() as conn:
            await self._ensure_partitions(conn, {int(time.time() // 86400) * 86400})
            # A record of a day without a partition (a replay from days ago) fails the statement;
            # the caller then writes the batch as rows, which makes the partitions it needs.
            return await conn.fetchval(_INSERT_JSON, list(texts))

    async def maintain(self, now: float, retention_days: int) -> int:
        """Today's and tomorrow's partitions made ahead; the expired ones dropped."""
        today = int(now // 86400) * 86400
        async with self._connection() as conn:
            await self._ensure_partitions(conn, {today, today + 86400})
        return await self.drop_expired(retention_cutoff(now, retention_days))

    async def partitions(self) -> list[str]:
        rows = await self.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'usage_records' ORDER BY c.relname", [])
        return [r[0] for r in rows]

    async def drop_expired(self, before: float) -> int:
        dropped = 0
        for name in await self.partitions():
            day = partition_day(name)
            if day is not None and day + 86400 <= before:
                async with self._connection() as conn:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
                        await conn.execute(f"DROP TABLE IF EXISTS {name}")
                self._partitions.discard(day)
                dropped += 1
        async with self._connection() as conn:
            await conn.execute("DELETE FROM usage_hourly WHERE hour < $1", int(before))
        return dropped

    # -- reading ---------------------------------------------------------------------------------
    async def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            return [tuple(r) for r in await conn.fetch(sql, *args)]

    def bucket(self, seconds: int, column: str = "ts") -> str:
        return f"(floor({column} / {seconds}) * {seconds})::bigint"

    def sum_of(self, column: str) -> str:
        return f"sum({column})::bigint"


__all__ = ["PostgresRecordStore", "partition_name", "partition_day", "LATEST"]
