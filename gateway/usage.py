"""Usage: one record per request, settled and written to the store off the response path.

A finished exchange becomes a record at once (the request's own cost ends there); a background task
batches records into one `write_batch` call (settlements, rollups and, with Redis, the
buffer the record store's drainers empty), and counts Prometheus metrics. Without Redis the same
task writes the batch to the record store itself (`records`). When the store or the record store
is unreachable, or the Redis buffer is full, records and settlements go to this process's spill
file (gateway/spill.py) and are replayed within a second of there being room again, with or without
traffic; an idle recorder also replays its sibling workers' files and those of processes that
died. Every batch goes to the store under a random batch id, and to the spill file under the same
id when its reply is lost: the store marks each batch it takes (per team, in the same script) and a
replay, by any process and however late, takes only what the first attempt did not. Once a batch is
sure never to be sent again, its marks are removed with the next write (ten minutes after a replay),
so the store remembers only batches in flight, waiting in a spill file or lately replayed. The record store also drops duplicates by request id.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import logs, metrics
from gateway.exchange import Exchange
from gateway.records.base import RecordStore, record_row
from gateway.records.ingest import IngestState, write_rows
from gateway.request import MAX_ID_CHARS
from gateway.spill import SpillFiles
from gateway.store.base import Invalid, Store, StoreUnavailable, new_batch_id, validate_batch_id
from gateway.store.rollups import encode_record, usage_entry
from gateway.tasks import cancel_and_wait
from gateway.tracing import RequestTracer  # loads no OpenTelemetry until a tracer is created

log = logging.getLogger("gateway.usage")
BATCH = 500
# What a record that cannot be stored is reduced to: its attribution and what it counted.
MINIMAL_FIELDS = ("request_id", "ts", "team", "key_id", "model", "provider", "status", "streamed", "input_tokens",
                  "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cost_usd")
REPLAY_EVERY_S = 1.0
# A batch replayed from a spill file had an attempt whose reply was lost, and a copy of it may still
# be on its way to Redis (a socket's retransmissions outlive its closing by minutes): its marks are
# kept this long after the replay before they go.
REPLAYED_MARKS_KEPT_S = 600.0


@dataclass(slots=True)
class Ticket:
    """What admission reserved for a request, to be settled when it ends."""
    team: str
    key_id: str
    request_id: str
    local: bool = False  # admitted without the store (fail-open outage); reconciled on settlement
    admitted_at: float = 0.0


def _header_session(session: str | None) -> str | None:
    """An x-session-id header is checked with the body; a request refused before that keeps it
    only up to the default id length, so that no record carries more than the limits allow."""
    return session if session is not None and len(session) <= MAX_ID_CHARS else None


def _plain(value: Any) -> Any:
    """`value` when it is a string, boolean, number or null that any JSON encoder writes, else None."""
    if type(value) is str:
        return value if value.isascii() or _utf8(value) else None
    if value is None or type(value) is bool or type(value) is int and -2**63 <= value < 2**63:
        return value
    return value if type(value) is float and math.isfinite(value) else None


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def storable(record: dict[str, Any]) -> dict[str, Any] | None:
    """`record` when the store can encode it; else, logged, a minimal record of its attribution
    and counts (None when even that cannot be stored), so that one bad record never costs the
    rest of its batch their records or their budget settlements."""
    try:
        usage_entry(record)
        return record
    except Invalid as exc:
        reason = str(exc)
    minimal: dict[str, Any] = {name: _plain(record.get(name)) for name in MINIMAL_FIELDS[:8]}
    for name in MINIMAL_FIELDS[8:]:
        value = record.get(name)
        minimal[name] = value if type(value) in (int, float) and 0 <= value < 2**63 else 0
    minimal["record_error"] = reason[:200]
    try:
        usage_entry(minimal)
    except Invalid as exc:
        log.error("usage record %r cannot be stored and is dropped: %s", record.get("request_id"), exc)
        return None
    log.error("usage record %r cannot be stored as it is (%s): a minimal record is kept", minimal["request_id"],
              reason)
    return minimal


def build_record(ex: Exchange, ended: float) -> dict[str, Any]:
    request = ex.request
    usage = ex.usage
    served = ex.served_by
    latency = ended - ex.started
    ttft = ex.first_token_at - ex.started if ex.first_token_at is not None else None
    output = usage.output_tokens if usage else 0
    generation = ended - ex.first_token_at if ex.first_token_at is not None else 0.0
    return {
        "request_id": ex.request_id,
        "ts": ex.started_wall,
        "team": ex.principal.team if ex.principal else None,
        "key_id": ex.principal.key_id if ex.principal else None,
        "user": request.user if request else None,
        "session_id": request.session_id if request else _header_session(ex.headers.session_id),
        "trace": request.trace if request and request.trace else {},
        "model_requested": request.model if request else None,
        "model": served.model.id if served else (ex.plan_model or None),
        "provider": served.provider.name if served else None,
        "attempts": [{"provider": a.provider, "model": a.model, "outcome": a.outcome} for a in ex.attempts],
        "status": ex.status or 500,
        "error_type": ex.error_type,
        "streamed": bool(request and request.stream),
        "inbound": ex.inbound,
        "input_tokens": usage.input_tokens if usage else 0,
        "output_tokens": output,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens if usage else 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens if usage else 0,
        "cost_usd": ex.cost_usd,
        "latency_ms": round(latency * 1000, 3),
        "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
        "output_tps": round(output / generation, 3) if output and generation > 0.001 else None,
        "estimated": bool(usage and usage.estimated),
        "limited_by": ex.limited_by,
        "web_search_requests": usage.web_search_requests if usage else 0,
        "unpriced": bool(served and served.endpoint.pricing.unpriced),  # cost_usd is 0 for want of a price
    }


class UsageRecorder:
    """`records`: the record store this process writes itself (no Redis buffer), else None.
    `max_buffer`: records and settlements pending in this process before they go to the spill file
    (a store that cannot keep up); `batch_size`: records per store call."""

    def __init__(self, store: Store, spill_path: str | os.PathLike, *, max_buffer: int = 50_000,
                 tracer: RequestTracer | None = None, records: RecordStore | None = None,
                 batch_size: int = BATCH, state: IngestState | None = None) -> None:
        self.store = store
        self.tracer = tracer
        self.records = records
        self.batch_size = batch_size
        self.state = state or IngestState(records.kind if records else "redis")
        self.spill = SpillFiles(spill_path)
        self.max_buffer = max_buffer
        self._deferred = False  # a bound sent records back to the spill file during this write
        self._done: list[tuple[str, str]] = []  # (team, batch id): batches written and never to be sent again
        self._later: list[tuple[float, str, str]] = []  # (when, team, batch id): replayed batches' marks
        self._records: list[dict] = []
        self._settlements: list[tuple] = []
        self._unrecorded: list[dict] = []  # answered before a key was known: counted and logged only
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._store_down = False
        self._outage = logs.RepeatedFailure(log, "usage: writing to the store failed; records wait in the spill file",
                                            expected=(StoreUnavailable,))
        self._flush_failure = logs.RepeatedFailure(log, "usage flush failed")
        # Told the teams of each batch of settlements once they are written (budget alerts).
        self.on_settled: Callable[[set[str]], None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self.spill.pending():
            self._store_down = True  # a previous run left records behind: replay them
            self._wake.set()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.flush()

    def finish(self, ex: Exchange, ticket: Ticket | None) -> None:
        """Called once per request as it ends; costs a dict and a list append."""
        record = build_record(ex, time.perf_counter())
        self._records.append(record)
        if ticket is not None:
            tokens = record["input_tokens"] + record["output_tokens"] + record["cache_creation_input_tokens"] \
                + record["cache_read_input_tokens"]
            self._settlements.append((ticket.team, ticket.key_id, ticket.request_id, record["cost_usd"], tokens,
                                      time.time()))
        if len(self._records) + len(self._settlements) > self.max_buffer:
            records, settlements = self._take()
            self.state.bound_hit("memory", len(records), time.time())
            self._spill(_batches(records, settlements, self.batch_size))
            self._store_down = True  # so that the spill file is replayed, as after an outage
        self._wake.set()

    def finish_unrecorded(self, ex: Exchange) -> None:
        """A request refused before it had a key (missing or invalid): metrics and the access log, no record."""
        self._unrecorded.append(build_record(ex, time.perf_counter()))
        self._wake.set()

    def _take(self) -> tuple[list[dict], list[tuple]]:
        records, settlements = self._records, self._settlements
        self._records, self._settlements = [], []
        return records, settlements

    async def _run(self) -> None:
        while True:
            # Spilled records are retried soon, whether requests come or not; an idle recorder
            # also takes the spill files of its sibling workers and of processes that died.
            try:
                async with asyncio.timeout(REPLAY_EVERY_S):
                    await self._wake.wait()
            except TimeoutError:
                if not self._store_down and self.spill.pending():
                    self._store_down = True
            self._wake.clear()
            await asyncio.sleep(0.002)  # let a burst of finishing requests share one batch
            try:
                await self.flush()
            except Exception as exc:  # the recorder must outlive any single bad batch
                self._flush_failure.failed(exc)

    async def flush(self) -> None:
        records, settlements = self._take()
        if self._unrecorded:
            unrecorded, self._unrecorded = self._unrecorded, []
            metrics.observe(unrecorded)
            logs.log_access(unrecorded)
        if records:
            metrics.observe(records)
            logs.log_access(records)
        if self.tracer is not None and records:
            # Building spans takes tens of microseconds each: not on the event loop.
            await asyncio.to_thread(self.tracer.export, records)
        if not records and not settlements:
            if self._store_down:
                await self._replay_spill()
            elif self._done or self._later and self._later[0][0] <= time.monotonic():
                await self._forget_done()
            return
        batches = _batches(records, settlements, self.batch_size)
        for n, batch in enumerate(batches):
            try:
                self._acknowledge(await self._write(batch))
            except Exception as exc:
                # Whatever went wrong, what was counted waits in the spill file for the next replay,
                # each batch under its id: one the store took before the reply was lost counts once.
                self._outage.failed(exc)
                self._spill(batches[n:])
                self._store_down = True
                return
        if settlements and self.on_settled is not None:
            self.on_settled({s[0] for s in settlements})
        if self._store_down:
            await self._replay_spill()
        else:
            self._outage.recovered()

    def _acknowledge(self, done: list[tuple[str, str]]) -> None:
        """Batches that will never be sent again: their marks go with the next write."""
        self._done += done

    def _take_done(self) -> list[tuple[str, str]]:
        """The marks to remove with the next write: those acknowledged, and replayed ones now due."""
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            _, team, batch_id = self._later.pop(0)
            self._done.append((team, batch_id))
        done, self._done = self._done, []
        return done

    async def _forget_done(self) -> None:
        done = self._take_done()
        try:
            await self.store.write_batch([], [], None, done)
        except Exception:  # noqa: BLE001  (they go with the next write)
            self._done = done + self._done

    async def _write(self, batch: _Batch) -> list[tuple[str, str]]:
        """Settle and record a batch, with the marks of acknowledged batches removed; records a full
        Redis buffer did not take go to the spill file as a new batch (and `_deferred` says so).
        Returns the (team, batch id) marks to remove once this batch is sure never to be sent again."""
        done = self._take_done()
        try:
            try:
                written = await self.store.write_batch(batch.settlements, batch.records, batch.id, done)
            except Invalid:
                # The store refuses a batch before writing any of it when one record is bad:
                # go again with the bad records reduced to what they counted.
                batch.records = [r for r in map(storable, batch.records) if r is not None]
                written = await self.store.write_batch(batch.settlements, batch.records, batch.id, done)
        except BaseException:
            self._done = done + self._done  # sent again with the next write (removing a mark is idempotent)
            raise
        if self.records is not None and batch.records:
            try:
                await write_rows(self.records, [record_row(r) for r in batch.records])
            except StoreUnavailable as exc:
                self.state.failed(exc)
                raise
            self.state.ok()
        if written.left:
            self.state.bound_hit("buffer", len(written.left), time.time())
            self._spill([_Batch(new_batch_id(), list(written.left), [])])
            self._store_down = self._deferred = True
        teams = {s[0] for s in batch.settlements} | {r["team"] for r in batch.records}
        return [(team, batch.id) for team in teams]

    def _spill(self, batches: list[_Batch]) -> None:
        lines = []
        for batch in batches:
            tag = orjson.dumps(batch.id)
            lines += [b'{"batch":' + tag + b"," + line[1:] for line in map(_spill_line, batch.records)
                      if line is not None]
            lines += [b'{"batch":' + tag + b',"settle":' + orjson.dumps(list(s)) + b"}" for s in batch.settlements]
        if not lines:
            return
        self.spill.append(lines)
        metrics.USAGE_BACKLOG.inc(len(lines))

    async def _replay_spill(self) -> None:
        """Write what waited in the spill files: this process's, its siblings' and dead processes'."""
        if not self.spill.pending():
            metrics.USAGE_BACKLOG.set(0)
            self._store_down = False
            return
        try:
            await self.store.ping()
        except StoreUnavailable:
            return
        try:
            await self.spill.replay(self._write_spilled)
        except StoreUnavailable:
            return
        if self.spill.pending():
            return  # spilled meanwhile, held by another replayer, or refused by a full buffer: next round
        metrics.USAGE_BACKLOG.set(0)
        self._store_down = False
        self._outage.recovered()

    async def _write_spilled(self, data: bytes) -> bool:
        """Store one spill file's batches, each under the id it was first sent with; False when a
        full buffer sent some back to the spill file (the replay stops there: the buffer has no
        room for the next file either). The marks of the file's batches go only once all are
        written (the file is deleted then: a file replayed again must find them all), and only
        REPLAYED_MARKS_KEPT_S later."""
        batches = _read_spill(data, self.batch_size)
        self._deferred = False
        done = []
        for batch in batches:
            done += await self._write(batch)
        when = time.monotonic() + REPLAYED_MARKS_KEPT_S
        self._later += [(when, team, batch_id) for team, batch_id in done]
        log.info("usage: %d spilled records and %d settlements written to the store",
                 sum(len(b.records) for b in batches), sum(len(b.settlements) for b in batches))
        return not self._deferred


@dataclass(slots=True)
class _Batch:
    """Settlements and records written in one store call, under one id for as long as they wait."""
    id: str
    records: list[dict]
    settlements: list[tuple]


def _batches(records: list[dict], settlements: list[tuple], size: int) -> list[_Batch]:
    return [_Batch(new_batch_id(), records[i:i + size], settlements[i:i + size])
            for i in range(0, max(len(records), len(settlements)), size)]


def _spill_line(record: dict[str, Any]) -> bytes | None:
    """The record encoded as the store encodes it, so that a replay sends its batch as it was sent."""
    try:
        return b'{"record":' + encode_record(record) + b"}"
    except Invalid:
        minimal = storable(record)
        return None if minimal is None else b'{"record":' + encode_record(minimal) + b"}"


def _read_spill(data: bytes, size: int) -> list[_Batch]:
    """A spill file's batches in order; lines of an earlier version, without a batch id, become
    new batches."""
    batches: dict[str, _Batch] = {}
    unmarked = _Batch("", [], [])
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line from a crash mid-write
        batch_id = item.get("batch")
        batch = unmarked if batch_id is None else batches.get(batch_id)
        if batch is None:
            try:
                batch = batches[batch_id] = _Batch(validate_batch_id(batch_id), [], [])
            except Invalid:
                continue
        if "record" in item:
            batch.records.append(item["record"])
        elif "settle" in item:
            batch.settlements.append(tuple(item["settle"]))
    return list(batches.values()) + _batches(unmarked.records, unmarked.settlements, size)
