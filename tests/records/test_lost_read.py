"""A drainer whose read reached Redis but whose reply never came back (Redis died, the connection
broke) still stores those records at once, not only when they are claimed as another replica's."""
from __future__ import annotations

import asyncio
import time

import orjson

from gateway.records import create_record_store
from gateway.records.base import RequestFilter
from gateway.records.ingest import BufferDrainer, IngestState
from gateway.store.base import create_store
from tests.redis_server import redis_server  # noqa: F401  (session fixture)


def test_entries_a_lost_read_left_pending_are_stored_before_any_claim(redis_server, tmp_path):  # noqa: F811
    redis_server.flush()
    record = {"request_id": "req_lost_reply", "ts": time.time(), "team": "team-a", "cost_usd": 0.0}

    async def run() -> list[dict]:
        store = create_store(redis_server.url)
        database = create_record_store(f"sqlite:///{tmp_path / 'usage.db'}")
        await database.open(migrate=True)
        try:
            drainer = BufferDrainer(store, database, IngestState(database.kind), claim_idle_s=3600)
            with redis_server.client() as r:
                pipe = r.pipeline(transaction=True)
                pipe.xgroup_create("gw:{team-a}:usage", "records", "0", mkstream=True)
                pipe.xadd("gw:{team-a}:usage", {"r": orjson.dumps(record).decode()})
                pipe.sadd("gw:{_global}:usage_teams", "team-a")
                # This drainer's read, as Redis executed it: the reply is the one that never arrived.
                pipe.xreadgroup("records", drainer.consumer, {"gw:{team-a}:usage": ">"})
                pipe.execute()
            await drainer.drain_once()  # a first round may only claim others' entries: none idle long enough
            await drainer.drain_once()
            found, _ = await database.requests(RequestFilter(team="team-a"), limit=10)
            with redis_server.client() as r:
                assert r.xlen("gw:{team-a}:usage") == 0
            return found
        finally:
            await database.close()
            await store.close()

    found = asyncio.run(run())
    assert [r["request_id"] for r in found] == ["req_lost_reply"]
