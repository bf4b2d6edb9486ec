"""Redis stopped under load: each outage policy behaves as documented, and nothing counted is lost."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from gateway.spill import SpillFiles
from tests.conftest import TEAM_KEY, base_settings
from tests.fakes.base import wait_for
from tests.gateway.test_usage_recording import HI, query, records
from tests.gateway_server import GatewayThread
from tests.redis_server import RedisServer


class DurableRedis(RedisServer):
    """A Redis that keeps its data across a stop and start, like a production one."""

    def command_line(self) -> list[str]:
        line = super().command_line()
        i = line.index("--appendonly")
        line[i + 1] = "yes"
        return line + ["--appendfsync", "always"]


@pytest.fixture
def durable_redis():
    with DurableRedis() as server:
        yield server


def test_fail_open_admits_during_the_outage_and_loses_no_record(durable_redis, anthropic_upstream, tmp_path):
    anthropic_upstream.reset()
    spill = tmp_path / "spill.jsonl"
    settings = base_settings(anthropic_upstream.url, redis_url=durable_redis.url, usage_spill_path=str(spill),
                             store_outage="fail_open")
    sent: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 16

    def load() -> None:
        with httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY}, timeout=10) as client:
            while time.monotonic() < stop_at:
                status = client.post("/v1/messages", json=HI).status_code
                with lock:
                    sent.append(status)
                time.sleep(0.1)

    with GatewayThread(**settings) as gw:
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(2)
        durable_redis.stop()
        assert wait_for(lambda: httpx.get(gw.url + "/readyz").json()["status"] == "degraded", timeout=3)
        time.sleep(10)
        assert SpillFiles(spill).pending(), "records made during the outage wait in the spill file"
        durable_redis.start()
        for t in threads:
            t.join()
        assert httpx.get(gw.url + "/readyz").json()["status"] == "ready"
        assert len(sent) >= 200 and set(sent) == {200}
        found = records(gw.gateway.records.url, "team-a", len(sent), timeout=15)
        assert len(found) == len(sent)
        assert len({r["request_id"] for r in found}) == len(sent)
        now = time.time()
        [row] = query(durable_redis.url, "query_usage", start=now - 3600, end=now + 60, group_by=["team"],
                      team="team-a")
        assert row["requests"] == len(sent)
        assert row["output_tokens"] == sum(r["output_tokens"] for r in found)
        assert wait_for(lambda: not SpillFiles(spill).pending(), timeout=5)


def test_fail_closed_answers_overloaded_while_the_store_is_down(anthropic_upstream, tmp_path):
    anthropic_upstream.reset()
    with RedisServer() as server:
        settings = base_settings(anthropic_upstream.url, redis_url=server.url, store_outage="fail_closed",
                                 usage_spill_path=str(tmp_path / "spill.jsonl"))
        with GatewayThread(**settings) as gw:
            headers = {"x-api-key": TEAM_KEY}
            assert httpx.post(gw.url + "/v1/messages", headers=headers, json=HI).status_code == 200
            server.stop()
            started = time.monotonic()
            response = httpx.post(gw.url + "/v1/messages", headers=headers, json=HI)
            assert time.monotonic() - started < 3, "an outage never hangs a request"
            assert response.status_code == 529
            assert response.json()["error"]["type"] == "overloaded_error"
            assert httpx.get(gw.url + "/readyz").status_code == 503
            server.start()
            assert wait_for(lambda: httpx.post(gw.url + "/v1/messages", headers=headers,
                                               json=HI).status_code == 200, timeout=10)
