"""Getting usage records into the record store: the resilient batch write, and the drainer that
empties the Redis usage buffers into the database.

With Redis, a request's record goes into its team's buffer stream in the same script call that
updates the rollups (see store/usage.lua); every replica runs a `BufferDrainer`, which reads the
buffers through one consumer group, writes a batch in one statement, and acknowledges (and
deletes) the entries only after the database has committed them. A replica that dies holding
entries leaves them pending, and another claims them once they have waited `claim_idle_s`; a
database outage leaves them in Redis, bounded by `usage_buffer_max_records` per team. Writes are
idempotent by (ts, request_id), so a claimed or retried entry never doubles a record.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway import metrics
from gateway.records.base import COLUMNS, RecordRejected, RecordStore, json_text, record_row
from gateway.store.base import StoreError, StoreUnavailable
from gateway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from gateway.store.redis import RedisStore

log = logging.getLogger("gateway.records")
_RECORD = COLUMNS.index("record")
MAINTAIN_EVERY_S = 3600.0   # partitions made ahead and expired ones dropped this often
LENGTH_EVERY_S = 1.0        # the buffer's length measured this often
FORGET_CONSUMERS_AFTER_S = 3600.0  # a consumer holding nothing and idle this long is a replica that is gone
MAX_PAUSE_S = 2.0           # the longest wait between two attempts while Redis or the database is down
TEAMS_EVERY_S = 1.0         # the list of buffers read again this often (and while there is none)


@dataclass
class IngestState:
    """What /readyz and the metrics say about the record store, as last seen by this process."""
    kind: str
    reachable: bool = True
    error: str | None = None
    buffered: int = 0          # records in the Redis buffers, not yet committed
    bound_hit_at: float = 0.0  # when a bound last sent records to the spill file

    def ok(self) -> None:
        if not self.reachable:
            log.info("usage: the record store (%s) accepts writes again", self.kind)
        self.reachable, self.error = True, None
        metrics.USAGE_DB_UP.set(1)

    def failed(self, exc: BaseException) -> None:
        if self.reachable:
            log.warning("usage: the record store (%s) is unreachable, records wait: %s", self.kind, exc)
        self.reachable, self.error = False, str(exc)
        metrics.USAGE_DB_UP.set(0)

    def bound_hit(self, bound: str, count: int, now: float) -> None:
        log.warning("usage: the %s bound was hit; %d records went to the spill file and will be written "
                    "when there is room", bound, count)
        metrics.USAGE_BOUND_HITS.labels(bound).inc(count)
        self.bound_hit_at = now

    def report(self, now: float, buffer_bound: int | None) -> dict[str, Any]:
        """Not ok while the database is unreachable, for a minute after a bound was hit, and while
        the buffers hold half of one team's bound: the database is falling behind."""
        behind = buffer_bound is not None and self.buffered >= buffer_bound // 2
        recent_bound = now - self.bound_hit_at < 60
        answer: dict[str, Any] = {"db": self.kind, "reachable": self.reachable, "buffered": self.buffered,
                                  "ok": self.reachable and not behind and not recent_bound}
        if self.error:
            answer["error"] = self.error
        if recent_bound:
            answer["bound_hit_seconds_ago"] = round(now - self.bound_hit_at, 1)
        return answer


def minimal_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row with its record replaced by the columns alone: what a bill needs when the full
    record is what the database refuses."""
    fields = {c: v for c, v in zip(COLUMNS, row) if c != "record"}
    fields["cost_usd"] = fields.pop("cost_nanos") / 1e9
    fields["user"] = fields.pop("user_id")
    return (*row[:_RECORD], orjson.dumps(fields).decode(), *row[_RECORD + 1:])


async def write_rows(store: RecordStore, rows: Sequence[tuple[Any, ...]]) -> int:
    """Write a batch; when the database refuses the batch itself (not the connection), write its
    rows one by one, a refused one in its minimal form, so one bad record never holds back the
    others. RecordStoreUnavailable passes through: the caller keeps the batch."""
    if not rows:
        return 0
    try:
        written = await store.insert_rows(rows)
    except RecordRejected as exc:
        log.warning("usage: the record store refused a batch of %d (%s); writing it row by row", len(rows), exc)
        written = 0
        for row in rows:
            try:
                written += await store.insert_rows([row])
                continue
            except RecordRejected:
                pass
            try:
                written += await store.insert_rows([minimal_row(row)])
            except RecordRejected as exc2:
                log.error("usage: record %s refused by the record store even in minimal form (%s): %r",
                          row[0], exc2, row)
                metrics.USAGE_REJECTED.inc()
    metrics.USAGE_DB_ROWS.inc(written)
    return written


def parsed_rows(entries: Sequence[tuple[str, str, bytes]]) -> list[tuple[Any, ...]]:
    """The rows of buffer entries (team, entry id, record JSON); an entry that is not a usage
    record is logged and counted, never written."""
    rows = []
    for team, entry_id, raw in entries:
        try:
            rows.append(record_row(orjson.loads(raw), raw))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.error("usage: buffer entry %s of team %s is not a usage record (%s): %r", entry_id, team, exc, raw)
            metrics.USAGE_REJECTED.inc()
    return rows


async def write_entries(store: RecordStore, entries: Sequence[tuple[str, str, bytes]]) -> int:
    """Write buffer entries: as JSON texts the database reads into rows itself where it can (one
    statement, no parse here: draining is on the serving process); a batch it refuses (an entry
    that is not a record, a day without a partition) is written as rows built here, where
    write_rows isolates whatever is refused."""
    if not entries:
        return 0
    if store.reads_json:
        try:
            written = await store.insert_json([json_text(raw) for _, _, raw in entries])
        except RecordRejected as exc:
            log.info("usage: the record store refused a batch of %d as JSON (%s); writing it as rows", len(entries), exc)
        else:
            metrics.USAGE_DB_ROWS.inc(written)
            return written
    return await write_rows(store, parsed_rows(entries))


class BufferDrainer:
    """Moves records from the Redis usage buffers into the record store (one per process)."""

    def __init__(self, store: RedisStore, records: RecordStore, state: IngestState, *, batch_size: int = 500,
                 interval: float = 0.5, claim_idle_s: float = 30.0, retention_days: int = 90) -> None:
        self.store = store
        self.records = records
        self.state = state
        self.batch_size = batch_size
        self.interval = interval
        self.claim_idle_s = claim_idle_s
        self.retention_days = retention_days
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._teams: list[str] = []
        self._teams_at = self._length_at = self._claimed_at = self._maintained_at = float("-inf")
        self._held: list[tuple[str, str, str]] = []  # read, not yet committed: retried first
        self._own_pending = True  # entries this consumer may hold from a read whose reply never came
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop reading; entries read but not committed stay pending, for this or another replica."""
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        pause = self.interval
        while True:
            try:
                await self._measure()
                moved = await self.drain_once()
                pause = 0.0 if moved >= self.batch_size else self.interval
            except StoreUnavailable as exc:  # Redis or the database: wait, then go on where we were
                log.debug("usage drain waits: %s", exc)
                # A read whose reply was lost left entries pending for this consumer: take those first.
                self._own_pending = True
                pause = min(max(pause * 2, self.interval), MAX_PAUSE_S)
            except Exception:
                log.exception("usage drain failed")
                pause = 5.0
            await asyncio.sleep(pause)

    async def drain_once(self) -> int:
        """One batch: read (or retry what is held), write, acknowledge. Returns records moved."""
        now = time.monotonic()
        if now - self._maintained_at >= MAINTAIN_EVERY_S:
            await self._maintain()
        if now - self._teams_at >= TEAMS_EVERY_S or not self._teams:
            self._teams = await self.store.buffer_teams()
            self._teams_at = now
        if not self._held and self._teams:
            claim = now - self._claimed_at >= self.claim_idle_s / 2
            if claim:
                self._claimed_at = now
                await self.store.buffer_forget_consumers(self._teams, int(FORGET_CONSUMERS_AFTER_S * 1000))
            per_team = max(1, self.batch_size // len(self._teams)) if len(self._teams) > 1 else self.batch_size
            if self._own_pending and not claim:
                self._held = await self.store.buffer_read(self._teams, self.consumer, per_team, own_pending=True)
                self._own_pending = bool(self._held)
            if not self._held:
                self._held = await self.store.buffer_read(
                    self._teams, self.consumer, per_team,
                    claim_idle_ms=int(self.claim_idle_s * 1000) if claim else None)
        if not self._held:
            return 0
        try:
            await write_entries(self.records, self._held)
        except StoreUnavailable as exc:
            self.state.failed(exc)
            raise
        self.state.ok()
        done = [(team, entry_id) for team, entry_id, _ in self._held]
        await self.store.buffer_ack(done)
        self._held = []
        return len(done)

    async def _measure(self) -> None:
        """The buffer's length, for /readyz and the metric: measured even while the database is down."""
        now = time.monotonic()
        if now - self._length_at >= LENGTH_EVERY_S and self._teams:
            self._length_at = now
            self.state.buffered = await self.store.buffer_length(self._teams)
            metrics.USAGE_BUFFER.set(self.state.buffered)

    async def _maintain(self) -> None:
        try:
            dropped = await self.records.maintain(time.time(), self.retention_days)
        except StoreError as exc:
            log.warning("usage: record store maintenance failed, retried later: %s", exc)
            self._maintained_at = time.monotonic() - MAINTAIN_EVERY_S + 60
            return
        self._maintained_at = time.monotonic()
        if dropped:
            log.info("usage: retention (%d days) removed %d %s", self.retention_days, dropped,
                     "partitions" if self.records.kind == "postgresql" else "records")


class RecordMaintainer:
    """Retention and partitions ahead, for a process that writes the record store directly (no Redis)."""

    def __init__(self, records: RecordStore, retention_days: int) -> None:
        self.records = records
        self.retention_days = retention_days
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                dropped = await self.records.maintain(time.time(), self.retention_days)
                if dropped:
                    log.info("usage: retention (%d days) removed %d", self.retention_days, dropped)
                await asyncio.sleep(MAINTAIN_EVERY_S)
            except StoreError as exc:
                log.warning("usage: record store maintenance failed, retried in a minute: %s", exc)
                await asyncio.sleep(60)
