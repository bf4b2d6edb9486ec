"""Usage spilled while Redis was down reaches Redis once it returns, even if no request follows;
until then /readyz says how many spilled lines wait."""
from __future__ import annotations

import fcntl
import os
import time

import httpx

from gateway.spill import SpillFiles
from tests.conftest import TEAM_KEY, base_settings
from tests.fakes.base import wait_for
from tests.gateway.test_usage_recording import HI, query
from tests.gateway_server import GatewayThread
from tests.redis_server import RedisServer


class DurableRedis(RedisServer):
    def command_line(self) -> list[str]:
        line = super().command_line()
        line[line.index("--appendonly") + 1] = "yes"
        return line + ["--appendfsync", "always"]


def stored_ids(redis_url: str) -> set[str]:
    found = query(redis_url, "usage_records", team="team-a", session_id=None, start=None, end=None, limit=1000)
    return {r["request_id"] for r in found}


def test_spilled_usage_reaches_redis_within_5_s_of_a_10_s_outage_ending_without_another_request(
        anthropic_upstream, tmp_path):
    anthropic_upstream.reset()
    spill = tmp_path / "spill.jsonl"
    with DurableRedis() as redis_server:
        settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_spill_path=str(spill),
                                 store_outage="fail_open", store_timeout=0.2)
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
            assert wait_for(lambda: wanted <= stored_ids(redis_server.url), timeout=5, interval=0.1)
            assert time.monotonic() - back_at < 5
            assert not SpillFiles(spill).pending()
            assert httpx.get(gw.url + "/readyz").json()["status"] == "ready"


def test_readyz_is_degraded_while_spilled_usage_waits_even_with_the_store_reachable(anthropic_upstream,
                                                                                     tmp_path):
    """A spill file another replayer holds (locked) waits; /readyz counts it until it is stored."""
    anthropic_upstream.reset()
    spill = tmp_path / "spill.jsonl"
    with RedisServer() as redis_server:
        settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_spill_path=str(spill),
                                 store_outage="fail_open", store_timeout=0.2)
        with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY},
                                                           timeout=10) as client:
            rid = client.post("/v1/messages", json=HI).headers["request-id"]
            assert wait_for(lambda: rid in stored_ids(redis_server.url), timeout=5)
            record = query(redis_server.url, "usage_records", team="team-a", session_id=None, start=None,
                           end=None, limit=10)[0]
            # A dead process's claimed file, a record that the store does not have yet.
            lost = {**record, "request_id": "req_" + "ab" * 12}
            held = tmp_path / "spill.999999.jsonl.999999-0.replaying"
            held.write_bytes(b'{"record":' + httpx.Response(200, json=lost).content + b"}\n")
            fd = os.open(held, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                time.sleep(1.5)  # the idle recorder looked and found it locked
                ready = httpx.get(gw.url + "/readyz").json()
                assert ready == {"status": "degraded", "store": "redis", "reachable": True, "demo": False,
                                 "spilled_records": 1}
            finally:
                os.close(fd)
            assert wait_for(lambda: lost["request_id"] in stored_ids(redis_server.url), timeout=5, interval=0.1)
            assert not held.exists()
            assert httpx.get(gw.url + "/readyz").json()["status"] == "ready"
