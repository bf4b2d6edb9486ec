"""Usage spilled while Redis was down reaches Redis once it returns, even if no request follows, and from
its buffer the record store; until then /readyz says how many spilled lines wait."""
from __future__ import annotations

import fcntl
import os
import time

import httpx
import orjson

from gateway.records.base import RequestFilter
from gateway.spill import SpillFiles
from tests.conftest import TEAM_KEY, base_settings
from tests.fakes.base import wait_for
from tests.gateway.test_usage_recording import HI, in_database, records
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import RedisServer


class DurableRedis(RedisServer):
    def command_line(self) -> list[str]:
        line = super().command_line()
        line[line.index("--appendonly") + 1] = "yes"
        return line + ["--appendfsync", "always"]


def stored(db_url: str) -> dict[str, dict]:
    found, _ = in_database(db_url, "requests", RequestFilter(team="team-a"), limit=1000)
    return {r["request_id"]: r for r in found}


def test_spilled_usage_is_stored_within_5_s_of_a_10_s_outage_ending_without_another_request(
        anthropic_upstream, postgres_server, tmp_path):  # noqa: F811
    anthropic_upstream.reset()
    postgres_server.reset()
    spill = tmp_path / "spill.jsonl"
    with DurableRedis() as redis_server:
        settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                                 usage_spill_path=str(spill), store_outage="fail_open", store_timeout=0.2,
                                 usage_flush_interval=0.1)
        with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY},
                                                           timeout=10) as client:
            assert client.post("/v1/messages", json=HI).status_code == 200
            redis_server.stop()
            down_at = time.monotonic()
            during = [client.post("/v1/messages", json=HI) for _ in range(3)]
            assert [r.status_code for r in during] == [200] * 3
            assert wait_for(SpillFiles(spill).pending, timeout=5)
            ready = httpx.get(gw.url + "/readyz").json()
            assert ready["status"] == "degraded" and ready["spilled_records"] >= 6  # 3 records, 3 settlements at least
            time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
            redis_server.start()
            back_at = time.monotonic()
            wanted = {r.headers["request-id"] for r in during}
            assert wait_for(lambda: wanted <= set(stored(postgres_server.url)), timeout=5, interval=0.1)
            assert time.monotonic() - back_at < 5
            assert not SpillFiles(spill).pending()
            records(postgres_server.url, "team-a", 1 + len(during))  # each exactly once
            assert wait_for(lambda: httpx.get(gw.url + "/readyz").json()["status"] == "ready", timeout=5)


def test_readyz_is_degraded_while_spilled_usage_waits_even_with_the_store_reachable(
        anthropic_upstream, postgres_server, tmp_path):  # noqa: F811
    """A spill file another replayer holds (locked) waits; /readyz counts it until it is stored."""
    anthropic_upstream.reset()
    postgres_server.reset()
    spill = tmp_path / "spill.jsonl"
    with RedisServer() as redis_server:
        settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                                 usage_spill_path=str(spill), store_outage="fail_open", store_timeout=0.2,
                                 usage_flush_interval=0.1)
        with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY},
                                                           timeout=10) as client:
            rid = client.post("/v1/messages", json=HI).headers["request-id"]
            assert wait_for(lambda: rid in stored(postgres_server.url), timeout=5)
            assert httpx.get(gw.url + "/readyz").json()["status"] == "ready"
            record = stored(postgres_server.url)[rid]
            # A dead process's claimed file, a record that the stores do not have yet.
            lost = {**record, "request_id": "req_" + "ab" * 12}
            held = tmp_path / "spill.999999.jsonl.999999-0.replaying"
            held.write_bytes(orjson.dumps({"record": lost}) + b"\n")
            fd = os.open(held, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                time.sleep(1.5)  # the idle recorder looked and found it locked
                ready = httpx.get(gw.url + "/readyz").json()
                assert ready["status"] == "degraded" and ready["reachable"] and ready["spilled_records"] == 1
            finally:
                os.close(fd)
            assert wait_for(lambda: lost["request_id"] in stored(postgres_server.url), timeout=5, interval=0.1)
            assert not held.exists()
            assert httpx.get(gw.url + "/readyz").json()["status"] == "ready"
