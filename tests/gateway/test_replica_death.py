"""`kill -9` of one of two replicas under load, then reconciliation: every completion the upstream
billed is either recorded or, its lease having expired unsettled, charged as abandoned at its
reservation; none is both, and the budget ledger is never below what the upstream billed."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import redis

from gateway.records.base import RequestFilter
from gateway.store.keys import TeamKeys
from policies.limits import day_id
from tests.fakes.billing import BillingFake
from tests.fakes.base import wait_for
from tests.gateway.replicas import Replicas
from tests.gateway.test_budget_race import ADMIN_KEY, INPUT_NANOS, MODEL, OUTPUT_NANOS
from tests.gateway.test_usage_recording import in_database
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

LEASE_TTL_S = 3.0
CLAIM_IDLE_S = 1.0


def test_a_killed_replicas_completions_are_each_recorded_or_abandoned_never_both(redis_server, postgres_server,  # noqa: F811
                                                                                  tmp_path):
    redis_server.flush()
    db_url = postgres_server.database("death")
    with BillingFake() as fake:
        fake.pace = 0.05  # a stream takes about a second: three are in flight on the killed replica at the kill
        config = {
            "admin_key": ADMIN_KEY, "redis_url": redis_server.url, "lease_ttl": LEASE_TTL_S,
            # Records the killed replica had taken from the buffer are claimed by the survivor after this.
            "usage_db_url": db_url, "usage_flush_interval": 0.1, "usage_claim_idle": CLAIM_IDLE_S,
            "providers": {"anthropic": {"base_url": fake.url, "api_key": "sk-upstream-death"}},
            "models": [{"id": MODEL, "display_name": MODEL, "context_length": 100_000, "max_output": 4096,
                        "endpoints": [{"provider": "anthropic", "upstream_model": "billed-model",
                                       "pricing": {"input": 1.0, "output": 10.0}}]}],
            "retries": {"per_endpoint": 1}, "key_cache_ttl": 60.0,
        }
        with Replicas(config, tmp_path, count=2, admin_key=ADMIN_KEY) as replicas:
            team = f"team-{uuid.uuid4().hex[:12]}"
            replicas.create_team(team, budget_daily_usd=100.0)
            key = replicas.create_key(team)["key"]
            killed = threading.Event()
            stop_at = [time.monotonic() + 60.0]  # moved up once the replica is killed
            in_flight = [0]  # streams the replica to be killed has begun answering and not finished
            lock = threading.Lock()

            def load(i: int) -> None:
                ask = {"model": MODEL, "max_tokens": 30, "stream": True,
                       "messages": [{"role": "user", "content": f"load {i}"}]}
                while time.monotonic() < stop_at[0]:
                    doomed = not killed.is_set() and i % 2 == 0
                    url = replicas.urls[0] if doomed else replicas.urls[1]
                    try:
                        with httpx.stream("POST", url + "/v1/messages", headers={"x-api-key": key}, json=ask,
                                          timeout=10) as response:
                            with lock:
                                in_flight[0] += doomed  # admitted: its answer has begun
                            try:
                                response.read()
                            finally:
                                with lock:
                                    in_flight[0] -= doomed
                    except httpx.HTTPError:
                        pass  # the replica died under this request
                    time.sleep(0.05)

            threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            assert wait_for(lambda: in_flight[0] >= 2, timeout=10, interval=0.01)
            replicas.processes[0].process.kill()  # SIGKILL: no shutdown, no flush
            killed.set()
            stop_at[0] = time.monotonic() + LEASE_TTL_S + 2.5  # the survivor's admissions sweep the expired leases
            for t in threads:
                t.join()

            client = redis.Redis.from_url(redis_server.url)
            tk = TeamKeys(team)
            # Every reservation is settled or abandoned once the survivor's admissions swept the expired leases.
            assert wait_for(lambda: int(client.hget(tk.reserved, "team") or 0) == 0, timeout=10)
            abandoned = {rid.decode() for rid in client.hkeys(tk.abandoned)}

            def stored() -> list[dict]:
                return in_database(db_url, "requests", RequestFilter(team=team), limit=100_000)[0]

            def settled_in_database() -> bool:  # nothing left in the buffer, none read and not committed
                before = len(stored())
                time.sleep(CLAIM_IDLE_S + 1.0)
                return len(stored()) == before
            assert wait_for(settled_in_database, timeout=30)
            records = stored()
            recorded = {r["request_id"] for r in records}
            served = [r for r in records if r["input_tokens"] > 0]  # the upstream answered it

            assert abandoned, "the kill left requests in flight"
            assert not abandoned & recorded, "none both recorded and abandoned"
            assert len(recorded) == len(records), "none recorded twice"
            assert len(fake.bills) <= len(served) + len(abandoned), "every billed completion is accounted for"
            assert len(served) < len(fake.bills), "the kill lost some records"
            billed = sum(i * INPUT_NANOS + o * OUTPUT_NANOS for i, o in fake.bills.values())
            spent = int(client.hget(tk.spend_day(day_id(time.time())), "team") or 0)
            assert spent >= billed, "budgets stay conservative"
