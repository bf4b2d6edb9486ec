"""What authentication costs Redis, as its MONITOR sees it: nothing beyond the admission script on
`POST /v1/messages` for a key seen within `key_cache_ttl`, one read of the key's and team's records
on the other routes, and one lookup for a burst of requests from a key not seen yet."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY, base_settings
from tests.gateway_server import GatewayThread
from tests.redis_server import CommandLog, RedisServer, redis_server  # noqa: F401  (session fixture)

ASK = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway(anthropic_upstream, redis_server: RedisServer, tmp_path_factory) -> Iterator[GatewayThread]:  # noqa: F811
    redis_server.flush()
    settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, key_cache_ttl=60,
                             usage_spill_path=str(tmp_path_factory.mktemp("spill") / "spill.jsonl"))
    with GatewayThread(**settings) as gw:
        yield gw


def new_key(gw: GatewayThread) -> str:
    team = "kl-" + uuid.uuid4().hex[:8]
    admin = {"x-api-key": ADMIN_KEY}
    assert httpx.post(gw.url + "/admin/teams", json={"name": team}, headers=admin).status_code == 201
    return httpx.post(gw.url + f"/admin/teams/{team}/keys", json={}, headers=admin).json()["key"]


async def burst(url: str, secret: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": secret}, timeout=20,
                                 limits=httpx.Limits(max_connections=n)) as client:
        answers = await asyncio.gather(*(client.post("/v1/messages", json=ASK) for _ in range(n)))
    return [a.status_code for a in answers]


def test_a_seen_key_costs_messages_nothing_but_the_admission_script(gateway, redis_server, upstream):  # noqa: F811
    secret = new_key(gateway)
    headers = {"x-api-key": secret}
    assert httpx.post(gateway.url + "/v1/messages", json=ASK, headers=headers).status_code == 200
    with CommandLog(redis_server) as log:
        for _ in range(5):
            assert httpx.post(gateway.url + "/v1/messages", json=ASK, headers=headers).status_code == 200
        names = log.names()
    assert "get" not in names and "mget" not in names, names


def test_every_other_route_reads_the_key_and_team_records_once_per_request(gateway, redis_server):  # noqa: F811
    secret = new_key(gateway)
    headers = {"x-api-key": secret}
    assert httpx.get(gateway.url + "/v1/models", headers=headers).status_code == 200
    with CommandLog(redis_server) as log:
        for _ in range(3):
            assert httpx.get(gateway.url + "/v1/models", headers=headers).status_code == 200
        names = log.names()
    assert names.count("mget") == 3 and "get" not in names, names


def test_a_burst_from_a_key_not_seen_yet_looks_it_up_once(gateway, redis_server, upstream):  # noqa: F811
    secret = new_key(gateway)
    with CommandLog(redis_server) as log:
        assert asyncio.run(burst(gateway.url, secret, 30)) == [200] * 30
        names = log.names()
    assert names.count("get") == 1 and names.count("mget") == 1, names
