"""SQLite record store: the embedded single-node default, one file in WAL mode.

The same schema and queries as PostgreSQL (see base.py), without partitions: retention deletes by
`ts`, which the primary key orders, in slices so that no statement holds the file for long. Every
statement runs on one thread with one connection, off the event loop; WAL lets readers of other
processes (`gateway usage export`) read while the gateway writes.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from gateway.records.base import (
    COLUMNS, HOURLY_KEY, HOURLY_SUMS, RecordRejected, RecordStore, RecordStoreUnavailable, hourly_rows, hourly_upsert,
    retention_cutoff,
)
from gateway.records.schema import VERSION_TABLE, pending
from gateway.store.base import StoreError

T = TypeVar("T")
_INSERT = f"INSERT OR IGNORE INTO usage_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_HOURLY = hourly_upsert(f"VALUES ({', '.join('?' * (len(HOURLY_KEY) + len(HOURLY_SUMS)))})")
DELETE_SLICE = 10_000


class SqliteRecordStore(RecordStore):
    kind = "sqlite"
    placeholder = "?"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._migrate = True

    # -- the thread -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; WAL keeps it consistent
            self._conn = conn
            if self._migrate:
                self._upgrade(None)
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return work(self._connect())
            except sqlite3.IntegrityError as exc:
                raise RecordRejected(f"sqlite refused the rows: {exc}") from exc
            except sqlite3.OperationalError as exc:
                raise RecordStoreUnavailable(f"sqlite unavailable ({self.path}): {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def open(self, *, migrate: bool) -> None:
        self._migrate = migrate
        await self._run(lambda conn: None)

    async def close(self) -> None:
        def shut(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None
        if self._conn is not None:
            await self._run(shut)
        self._thread.shutdown(wait=False)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- schema ----------------------------------------------------------------------------------
    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        conn.execute(VERSION_TABLE)
        return int(conn.execute("SELECT coalesce(max(version), 0) FROM usage_schema").fetchone()[0])

    def _upgrade(self, target: int | None) -> tuple[int, int]:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time, so two processes never both migrate
        try:
            before = self._version(conn)
            for version, statements in pending("sqlite", before, target):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO usage_schema VALUES (?, ?)", (version, time.time()))
            after = self._version(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return before, after

    async def upgrade(self, target: int | None = None) -> tuple[int, int]:
        return await self._run(lambda conn: self._upgrade(target))

    async def schema_version(self) -> int:
        return await self._run(self._version)

    # -- writing ---------------------------------------------------------------------------------
    async def insert_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0

        def write(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")  # the rows and their hourly sums, together or not at all
            try:
                fresh = [row for row in rows if conn.execute(_INSERT, row).rowcount == 1]
                conn.executemany(_HOURLY, hourly_rows(fresh))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return len(fresh)
        return await self._run(write)

    async def maintain(self, now: float, retention_days: int) -> int:
        return await self.drop_expired(retention_cutoff(now, retention_days))

    async def drop_expired(self, before: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            removed = 0
            while True:
                cursor = conn.execute("DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records "
                                      "WHERE ts < ? LIMIT ?)", (before, DELETE_SLICE))
                removed += cursor.rowcount
                if cursor.rowcount < DELETE_SLICE:
                    conn.execute("DELETE FROM usage_hourly WHERE hour < ?", (int(before),))
                    return removed
        return await self._run(delete)

    # -- reading ---------------------------------------------------------------------------------
    async def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._run(lambda conn: conn.execute(sql, list(args)).fetchall())

    def bucket(self, seconds: int, column: str = "ts") -> str:
        return f"(CAST({column} / {seconds} AS INTEGER) * {seconds})"
