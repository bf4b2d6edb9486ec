"""Redis Cluster: when one master dies, only the teams whose slot it held are refused. A key's lookup
record (by secret hash) may live on any node; once a replica has seen the key, it never needs that
record again, so its death touches nobody else. The nodes run with `cluster-require-full-coverage
no`, as the README recommends for partial availability."""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import pytest
from redis.crc import key_slot

from gateway.auth import secret_hash
from gateway.store import keys
from tests.conftest import ADMIN_KEY, base_settings
from tests.gateway_server import GatewayThread
from tests.redis_server import RedisClusterServers, RedisServer

COUNT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
ASK = {**COUNT, "max_tokens": 5}
NODE_TIMEOUT_S = 2.0  # the test cluster's cluster-node-timeout: a dead master is marked failed after it


class PartialCoverageNode(RedisServer):
    def command_line(self) -> list[str]:
        return super().command_line() + ["--cluster-require-full-coverage", "no"]


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers()
    servers.nodes = [PartialCoverageNode(cluster=True) for _ in range(3)]
    with servers:
        yield servers


def node_of(cluster: RedisClusterServers, key: str) -> int:
    """The index of the node that serves this Redis key."""
    slot = key_slot(key.encode())
    with cluster.nodes[0].client() as c:
        for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(master[1])
                return next(i for i, n in enumerate(cluster.nodes) if n.port == port)
    raise AssertionError(f"no node serves slot {slot}")


def team_on(cluster: RedisClusterServers, node: int, gw: GatewayThread) -> str:
    """A new team (made through the admin API) whose slot is on that node."""
    for i in itertools.count():
        name = f"cl{node}-{i}"
        if node_of(cluster, keys.TeamKeys(name).record) == node:
            response = httpx.post(gw.url + "/admin/teams", json={"name": name}, headers={"x-api-key": ADMIN_KEY})
            assert response.status_code == 201, response.text
            return name
    raise AssertionError("unreachable")


def key_looked_up_on(cluster: RedisClusterServers, node: int, team: str, gw: GatewayThread) -> str:
    """A key of the team (made through the admin API) whose lookup record lives on that node."""
    for _ in range(50):
        created = httpx.post(gw.url + f"/admin/teams/{team}/keys", json={}, headers={"x-api-key": ADMIN_KEY})
        assert created.status_code == 201, created.text
        secret = created.json()["key"]
        if node_of(cluster, keys.key_by_hash(secret_hash(secret))) == node:
            return secret
    raise AssertionError("no key landed on that node")


def routes(gw: GatewayThread, secret: str) -> dict[str, int]:
    with httpx.Client(base_url=gw.url, headers={"x-api-key": secret}, timeout=10) as c:
        return {"messages": c.post("/v1/messages", json=ASK).status_code,
                "count_tokens": c.post("/v1/messages/count_tokens", json=COUNT).status_code,
                "models": c.get("/v1/models").status_code}


def all_are(status: int) -> dict[str, int]:
    return dict.fromkeys(("messages", "count_tokens", "models"), status)


def test_a_dead_master_refuses_only_the_teams_on_it(cluster, anthropic_upstream, tmp_path):
    anthropic_upstream.reset()
    # fail_closed, so that any store call a request needs and cannot make shows as a 529.
    settings = base_settings(anthropic_upstream.url, redis_url=cluster.url, store_outage="fail_closed",
                             key_cache_ttl=0.1, usage_spill_path=str(tmp_path / "spill.jsonl"))
    with GatewayThread(**settings) as gw:
        dying = 2
        healthy_team = team_on(cluster, 0, gw)
        healthy_key = key_looked_up_on(cluster, dying, healthy_team, gw)  # its lookup is on the dying node
        doomed_team = team_on(cluster, dying, gw)
        doomed_key = key_looked_up_on(cluster, 1, doomed_team, gw)
        assert routes(gw, healthy_key) == all_are(200)
        assert routes(gw, doomed_key) == all_are(200)

        cluster.nodes[dying].stop()
        time.sleep(NODE_TIMEOUT_S + 0.5)  # the cluster has marked the master failed

        assert routes(gw, healthy_key) == all_are(200)
        doomed = httpx.post(gw.url + "/v1/messages", json=ASK, headers={"x-api-key": doomed_key}, timeout=10)
        assert doomed.status_code == 529 and doomed.json()["error"]["type"] == "overloaded_error"
