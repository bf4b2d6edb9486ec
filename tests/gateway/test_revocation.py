"""Revocation, expiry and team deletion hold on every route of every replica as soon as the admin
call returns, however long the replicas cache keys; and a request presents one key only."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.anthropic import AnthropicFake
from tests.gateway.replicas import Replicas
from tests.postgres_server import PostgresServer, postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (session fixture)

ADMIN_KEY = "sk-test-revocation-admin-0000"
CONFIG_KEY = "sk-test-revocation-config-0001"
COUNT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
ASK = {**COUNT, "max_tokens": 5}


@pytest.fixture(scope="module")
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


@pytest.fixture(scope="module")
def replicas(fake, redis_server: RedisServer, postgres_server: PostgresServer,  # noqa: F811
             tmp_path_factory) -> Iterator[Replicas]:
    redis_server.flush()
    # Replicas sharing Redis need one shared record store: a database of their own, which the other
    # tests' resets of the default database leave alone.
    config = {"admin_key": ADMIN_KEY, "redis_url": redis_server.url,
              "usage_db_url": postgres_server.database("revocation"),
              "providers": {"anthropic": {"base_url": fake.url, "api_key": "sk-upstream-revocation"}},
              # Far longer than any test: only a check against the store can notice a change.
              "keys": [{"key": CONFIG_KEY, "team": "rv-config"}],
              "key_cache_ttl": 300}
    with Replicas(config, tmp_path_factory.mktemp("revocation"), count=2, admin_key=ADMIN_KEY) as running:
        yield running


def routes(url: str, secret: str, **headers: str) -> dict[str, int]:
    """The status of each route a team key may call."""
    headers = {"x-api-key": secret, **headers}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
        return {"messages": c.post("/v1/messages", json=ASK).status_code,
                "count_tokens": c.post("/v1/messages/count_tokens", json=COUNT).status_code,
                "models": c.get("/v1/models").status_code,
                "model": c.get("/v1/models/claude-sonnet-4-5").status_code,
                "usage": c.get("/v1/usage").status_code}


def all_are(status: int) -> dict[str, int]:
    return dict.fromkeys(("messages", "count_tokens", "models", "model", "usage"), status)


def new_key(replicas: Replicas) -> tuple[str, dict]:
    team = "rv-" + uuid.uuid4().hex[:8]
    replicas.create_team(team)
    return team, replicas.create_key(team)


def test_a_revoked_key_is_refused_on_every_route_of_the_other_replica_at_once(replicas):
    _, key = new_key(replicas)
    assert routes(replicas.urls[1], key["key"]) == all_are(200)  # replica 1 has cached the key
    assert replicas.admin("DELETE", f"/admin/keys/{key['id']}", via=0).status_code == 200
    assert routes(replicas.urls[1], key["key"]) == all_are(401)
    assert routes(replicas.urls[0], key["key"]) == all_are(401)


def test_an_expired_key_is_refused_on_every_route_of_every_replica_from_its_expiry_on(replicas):
    _, key = new_key(replicas)
    expiry = time.time() + 1.0
    assert replicas.admin("PATCH", f"/admin/keys/{key['id']}", json={"expires_at": expiry}).status_code == 200
    assert routes(replicas.urls[1], key["key"]) == all_are(200)
    time.sleep(max(0.0, expiry - time.time()) + 0.05)
    assert routes(replicas.urls[1], key["key"]) == all_are(401)
    assert routes(replicas.urls[0], key["key"]) == all_are(401)


def test_keys_of_a_deleted_team_are_refused_on_every_route_of_the_other_replica(replicas):
    team, key = new_key(replicas)
    assert routes(replicas.urls[1], key["key"]) == all_are(200)
    assert replicas.admin("DELETE", f"/admin/teams/{team}", via=0).status_code == 200
    assert routes(replicas.urls[1], key["key"]) == all_are(401)


def test_a_rotated_key_stops_and_its_successor_works_on_the_other_replica(replicas):
    _, key = new_key(replicas)
    assert routes(replicas.urls[1], key["key"]) == all_are(200)
    rotated = replicas.admin("POST", f"/admin/keys/{key['id']}/rotate", via=0)
    assert rotated.status_code == 201
    assert routes(replicas.urls[1], key["key"]) == all_are(401)
    assert routes(replicas.urls[1], rotated.json()["key"]) == all_are(200)


def test_the_same_key_in_x_api_key_and_bearer_is_accepted_on_every_route(replicas):
    _, key = new_key(replicas)
    assert routes(replicas.urls[0], key["key"], authorization=f"Bearer {key['key']}") == all_are(200)


def test_two_different_keys_are_refused_on_every_route_even_when_both_are_valid(replicas):
    _, first = new_key(replicas)
    _, second = new_key(replicas)
    answers = routes(replicas.urls[0], first["key"], authorization=f"Bearer {second['key']}")
    assert answers == all_are(401)


def test_the_admin_key_beside_a_team_key_opens_no_admin_route(replicas):
    _, key = new_key(replicas)
    response = httpx.get(replicas.urls[0] + "/admin/teams", timeout=10,
                         headers={"x-api-key": key["key"], "authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_config_file_key_revoked_through_the_admin_api_is_refused_on_every_route(replicas):
    assert routes(replicas.urls[1], CONFIG_KEY) == all_are(200)
    [listed] = replicas.admin("GET", "/admin/keys", params={"team": "rv-config"}).json()["data"]
    assert replicas.admin("DELETE", f"/admin/keys/{listed['id']}", via=0).status_code == 200
    assert routes(replicas.urls[1], CONFIG_KEY) == all_are(401)
