"""A fault run: Redis killed for a few seconds under load from keys made through the admin API, under
both outage policies. Every answer is 200 or Anthropic's envelope (never a bare 500), and once Redis
is back every request's usage record is there exactly once."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from tests.conftest import ADMIN_KEY, TEAM_KEY, base_settings
from tests.gateway.test_store_outage import DurableRedis
from tests.gateway.test_usage_recording import records
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)

ASK = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
OUTAGE_S = 2.0


@pytest.mark.parametrize("policy,outage_status", [("fail_open", 200), ("fail_closed", 529)])
def test_a_redis_outage_under_load_yields_only_enveloped_answers_and_loses_no_record(
        upstream, postgres_server, tmp_path, policy, outage_status):  # noqa: F811
    postgres_server.reset()
    with DurableRedis() as redis:
        settings = base_settings(upstream.url, redis_url=redis.url, usage_db_url=postgres_server.url,
                                 store_outage=policy, key_cache_ttl=0.5,
                                 usage_spill_path=str(tmp_path / "spill.jsonl"))
        with GatewayThread(**settings) as gw:
            team = "fr-" + uuid.uuid4().hex[:8]
            admin = {"x-api-key": ADMIN_KEY}
            assert httpx.post(gw.url + "/admin/teams", json={"name": team}, headers=admin).status_code == 201
            secrets = [httpx.post(gw.url + f"/admin/teams/{team}/keys", json={}, headers=admin).json()["key"]
                       for _ in range(2)]
            answers: list[httpx.Response] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + OUTAGE_S + 2.0

            def load(secret: str) -> None:
                with httpx.Client(base_url=gw.url, headers={"x-api-key": secret}, timeout=10) as client:
                    while time.monotonic() < stop_at:
                        response = client.post("/v1/messages", json=ASK)
                        with lock:
                            answers.append(response)
                        time.sleep(0.05)

            threads = [threading.Thread(target=load, args=(s,)) for s in secrets]
            for t in threads:
                t.start()
            time.sleep(1.0)
            redis.stop()
            time.sleep(OUTAGE_S)
            redis.start()
            for t in threads:
                t.join()
            # The recorder replays its spill file when a request next finishes.
            assert httpx.post(gw.url + "/v1/messages", json=ASK, headers={"x-api-key": TEAM_KEY}).status_code == 200

            statuses = {r.status_code for r in answers}
            assert statuses <= {200, outage_status}, statuses
            assert outage_status in statuses and 200 in statuses
            for response in answers:
                if response.status_code != 200:
                    assert response.headers["content-type"] == "application/json"
                    assert response.json()["error"]["type"] == "overloaded_error"
            found = records(postgres_server.url, team, len(answers), timeout=15)
            ids = [r["request_id"] for r in found]
            assert len(ids) == len(set(ids)) == len(answers)
            assert set(ids) == {r.headers["request-id"] for r in answers}
