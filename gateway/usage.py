"""Usage: one record per request, settled and written to the store off the response path.

A finished exchange becomes a record at once (the request's own cost ends there); a background task
batches records into one `settle_and_append` call (settlements, rollups and, with Redis, the
buffer the record store's drainers empty), and counts Prometheus metrics. Without Redis the same
task writes the batch to the record store itself (`records`). When the store or the record store
is unreachable, or the Redis buffer is full, records and settlements go to an append-only spill
file and are replayed when there is room again; both stores drop duplicates by request id, so a
replay writes each record once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway import metrics
from gateway.exchange import Exchange
from gateway.records.base import RecordStore, record_row
from gateway.records.ingest import IngestState, write_rows
from gateway.store.base import BufferFull, Store, StoreUnavailable
from gateway.tracing import RequestTracer  # loads no OpenTelemetry until a tracer is created

log = logging.getLogger("gateway.usage")
BATCH = 500


@dataclass(slots=True)
class Ticket:
    """What admission reserved for a request, to be settled when it ends."""
    team: str
    key_id: str
    request_id: str
    local: bool = False  # admitted without the store (fail-open outage); reconciled on settlement
    admitted_at: float = 0.0


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
        "session_id": request.session_id if request else ex.headers.session_id,
        "trace": request.trace if request and request.trace else {},
        "model_requested": request.model if request else None,
        "model": served.model.id if served else (ex.plan_model or None),
        "provider": served.provider.name if served else None,
        "attempts": [{"provider": a.provider, "model": a.model, "outcome": a.outcome} for a in ex.attempts],
        "status": ex.status or 500,
        "error_type": ex.error_type,
        "streamed": bool(request and request.stream),
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
        self.spill_path = Path(spill_path)
        self.max_buffer = max_buffer
        self._deferred = False  # a bound sent records back to the spill file during this write
        self._records: list[dict] = []
        self._settlements: list[tuple] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._store_down = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        if _waiting(self.spill_path) or _waiting(self.spill_path.with_name(self.spill_path.name + ".replaying")):
            self._store_down = True  # a previous run left records behind: replay them
            self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
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
            batch = self._take()
            self.state.bound_hit("memory", len(batch[0]), time.time())
            self._spill(batch)
            self._store_down = True  # so that the spill file is replayed, as after an outage
        self._wake.set()

    def _take(self) -> tuple[list[dict], list[tuple]]:
        records, settlements = self._records, self._settlements
        self._records, self._settlements = [], []
        return records, settlements

    async def _run(self) -> None:
        while True:
            try:
                # While records wait in the spill file, try again every second even without traffic.
                async with asyncio.timeout(1.0 if self._store_down else None):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await asyncio.sleep(0.002)  # let a burst of finishing requests share one batch
            try:
                await self.flush()
            except Exception:  # the recorder must outlive any single bad batch
                log.exception("usage flush failed")

    async def flush(self) -> None:
        records, settlements = self._take()
        if records:
            metrics.observe(records)
        if self.tracer is not None and records:
            # Building spans takes tens of microseconds each: not on the event loop.
            await asyncio.to_thread(self.tracer.export, records)
        if not records and not settlements:
            if self._store_down:
                await self._replay_spill()
            return
        try:
            await self._write(records, settlements)
        except Exception as exc:
            # Whatever went wrong, what was counted waits in the spill file for the next replay.
            if not isinstance(exc, StoreUnavailable):
                log.exception("usage write failed; the batch is kept in the spill file")
            self._spill((records, settlements))
            self._store_down = True
            return
        if self._store_down:
            await self._replay_spill()

    async def _write(self, records: list[dict], settlements: list[tuple]) -> None:
        """Settle and record a batch; records a full Redis buffer did not take go to the spill file
        (and `_deferred` says so)."""
        size = self.batch_size
        for i in range(0, max(len(records), len(settlements)), size):
            chunk = records[i:i + size]
            try:
                left = await self.store.settle_and_append(settlements[i:i + size], chunk)
            except BufferFull as full:
                left = full.records
            if self.records is not None and chunk:
                try:
                    await write_rows(self.records, [record_row(r) for r in chunk])
                except StoreUnavailable as exc:
                    self.state.failed(exc)
                    raise
                self.state.ok()
            if left:
                self.state.bound_hit("buffer", len(left), time.time())
                self._spill((list(left), []))
                self._store_down = self._deferred = True

    def _spill(self, batch: tuple[list[dict], list[tuple]]) -> None:
        records, settlements = batch
        lines = [orjson.dumps({"record": r}) for r in records]
        lines += [orjson.dumps({"settle": list(s)}) for s in settlements]
        if not lines:
            return
        with open(self.spill_path, "ab") as spill:
            spill.write(b"\n".join(lines) + b"\n")
            spill.flush()
            if stat.S_ISREG(os.fstat(spill.fileno()).st_mode):  # /dev/null and pipes cannot be synced
                os.fsync(spill.fileno())
        metrics.USAGE_BACKLOG.inc(len(lines))

    async def _replay_spill(self) -> None:
        """Write what waited in the spill file.

        The file is first renamed, so records spilled meanwhile land in a new file and are not
        deleted with it; the renamed file goes only once all of it is stored.
        """
        replaying = self.spill_path.with_name(self.spill_path.name + ".replaying")
        if not _waiting(replaying) and not _waiting(self.spill_path):
            self._store_down = False
            return
        try:
            await self.store.ping()
        except StoreUnavailable:
            return
        while True:
            if not _waiting(replaying):
                if not _waiting(self.spill_path):
                    break
                os.replace(self.spill_path, replaying)
            records, settlements, count = _read_spill(replaying)
            self._deferred = False
            try:
                await self._write(records, settlements)
            except StoreUnavailable:
                return
            replaying.unlink(missing_ok=True)
            metrics.USAGE_BACKLOG.dec(count)
            log.info("usage: %d spilled records and %d settlements written to the store", len(records),
                     len(settlements))
            if self._deferred:
                return  # the buffer is still full: what it refused waits in the new spill file
        self._store_down = False


def _waiting(path: Path) -> bool:
    """Whether records wait in this file. Only a regular file holds any: a spill path such as
    /dev/null (records thrown away on purpose) must never be renamed or deleted by a replay."""
    return path.is_file()


def _read_spill(path: Path) -> tuple[list[dict], list[tuple], int]:
    records: list[dict] = []
    settlements: list[tuple] = []
    count = 0
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        count += 1
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line from a crash mid-write
        if "record" in item:
            records.append(item["record"])
        elif "settle" in item:
            settlements.append(tuple(item["settle"]))
    return records, settlements, count
