"""Usage spilled while Redis was down reaches Redis once it returns, even if no request follows, and from
its buffer the record store."""
from __future__ import annotations

import httpx

from gateway.records.base import RequestFilter
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


def test_spilled_usage_reaches_redis_when_it_returns_without_another_request(anthropic_upstream, postgres_server,  # noqa: F811
                                                                           tmp_path):
    anthropic_upstream.reset()
    postgres_server.reset()
    spill = tmp_path / "spill.jsonl"
    with DurableRedis() as redis_server:
        settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                                 usage_spill_path=str(spill),
                                 store_outage="fail_open", store_timeout=0.2)
        with GatewayThread(**settings) as gw, httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY},
                                                           timeout=10) as client:
            assert client.post("/v1/messages", json=HI).status_code == 200
            redis_server.stop()
            during = [client.post("/v1/messages", json=HI) for _ in range(3)]
            assert [r.status_code for r in during] == [200] * 3
            assert wait_for(spill.exists, timeout=5)
            redis_server.start()

            def stored_ids() -> set[str]:
                found, _ = in_database(postgres_server.url, "requests", RequestFilter(team="team-a"), limit=1000)
                return {r["request_id"] for r in found}
            wanted = {r.headers["request-id"] for r in during}
            assert wait_for(lambda: wanted <= stored_ids(), timeout=5, interval=0.2)
            assert not spill.exists()
            records(postgres_server.url, "team-a", 1 + len(during))  # each exactly once
