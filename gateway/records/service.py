"""The record store as the gateway runs it: which database, who writes it, what /readyz says.

With Redis, records reach the database through the Redis buffer and this process's
`BufferDrainer`; without, the usage recorder writes them itself and a `RecordMaintainer` keeps
retention. Either way the schema is brought up to date at startup unless `usage_db_migrate` is off.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.records import create_record_store, record_store_url
from gateway.records.ingest import BufferDrainer, IngestState, RecordMaintainer
from gateway.records.schema import LATEST
from gateway.store.base import Store, StoreError

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger("gateway.records")


class UsageRecords:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.url = record_store_url(settings.usage_db_url, settings.data_dir)
        self.db = create_record_store(self.url, timeout=settings.usage_db_timeout)
        self.state = IngestState(self.db.kind)
        self.buffered = hasattr(store, "buffer_read")  # the Redis store buffers; the memory store does not
        self.drainer = BufferDrainer(store, self.db, self.state, batch_size=settings.usage_batch_size,  # type: ignore[arg-type]
                                     interval=settings.usage_flush_interval, claim_idle_s=settings.usage_claim_idle,
                                     retention_days=settings.usage_retention_days) if self.buffered else None
        self.maintainer = None if self.buffered else RecordMaintainer(self.db, settings.usage_retention_days)

    def recorder_options(self) -> dict[str, Any]:
        return {"records": None if self.buffered else self.db, "batch_size": self.settings.usage_batch_size,
                "max_buffer": self.settings.usage_max_pending, "state": self.state}

    async def start(self) -> None:
        await self.db.open(migrate=self.settings.usage_db_migrate)
        if not self.settings.usage_db_migrate:
            with contextlib.suppress(StoreError):
                version = await self.db.schema_version()
                if version < LATEST:
                    log.error("usage: the record store's schema is at version %d, this gateway needs %d: "
                              "run `gateway db upgrade` (records wait in the spill file or the buffer meanwhile)",
                              version, LATEST)
        for worker in (self.drainer, self.maintainer):
            if worker is not None:
                worker.start()

    async def stop(self) -> None:
        for worker in (self.drainer, self.maintainer):
            if worker is not None:
                await worker.stop()

    async def close(self) -> None:
        await self.db.close()

    def report(self) -> dict[str, Any]:
        bound = self.settings.usage_buffer_max_records if self.buffered else None
        return self.state.report(time.time(), bound)
