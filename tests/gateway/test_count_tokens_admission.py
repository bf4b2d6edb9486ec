"""`POST /v1/messages/count_tokens` is admitted like a message: RPM, allowed models, revocation and
expiry hold for it (TPM and budgets do not: counting costs nothing), and it is recorded in usage."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY, base_settings
from tests.gateway.test_usage_recording import records
from tests.gateway_server import GatewayThread
from tests.postgres_server import PostgresServer, postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (session fixture)

SONNET = "anthropic/claude-sonnet-4.5"
COUNT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "how many tokens?"}]}
ASK = {**COUNT, "max_tokens": 50}


@pytest.fixture(scope="module")
def usage_db(postgres_server: PostgresServer) -> str:  # noqa: F811
    """A database of this module's own, which the other tests' resets of the default one leave alone."""
    return postgres_server.database("count_tokens_admission")


@pytest.fixture(scope="module")
def gateway(anthropic_upstream, redis_server: RedisServer, usage_db: str,  # noqa: F811
            tmp_path_factory) -> Iterator[GatewayThread]:
    redis_server.flush()
    settings = base_settings(anthropic_upstream.url, redis_url=redis_server.url, usage_db_url=usage_db,
                             usage_spill_path=str(tmp_path_factory.mktemp("spill") / "spill.jsonl"))
    with GatewayThread(**settings) as gw:
        yield gw


def admin(gw: GatewayThread, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"x-api-key": ADMIN_KEY}, timeout=10, **kwargs)


def team_key(gw: GatewayThread, **limits) -> tuple[str, dict]:
    """A new team with these limits, and a key of it: (team name, created key with its secret)."""
    team = "ct-" + uuid.uuid4().hex[:8]
    assert admin(gw, "POST", "/admin/teams", json={"name": team, **limits}).status_code == 201
    created = admin(gw, "POST", f"/admin/teams/{team}/keys", json={})
    assert created.status_code == 201, created.text
    return team, created.json()


def count(gw: GatewayThread, secret: str, body: dict = COUNT) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages/count_tokens", json=body, headers={"x-api-key": secret}, timeout=10)


def upstream_counts(upstream) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/count_tokens"))


def test_count_tokens_beyond_the_teams_rpm_is_refused_before_reaching_the_provider(gateway, upstream):
    _, key = team_key(gateway, rpm=2, budget_daily_usd=0)
    answers = [count(gateway, key["key"]) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert answers[0].headers["anthropic-ratelimit-requests-limit"] == "2"
    assert upstream_counts(upstream) == 2, "the refused count never reached the provider with our key"


def test_count_tokens_and_messages_share_the_rpm_window(gateway, upstream):
    _, key = team_key(gateway, rpm=2)
    assert count(gateway, key["key"]).status_code == 200
    assert httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key["key"]}).status_code == 200
    assert count(gateway, key["key"]).status_code == 429


def test_count_tokens_is_not_held_to_tpm_or_budget(gateway, upstream):
    _, key = team_key(gateway, tpm=1, budget_daily_usd=0, budget_monthly_usd=0)
    ask = httpx.post(gateway.url + "/v1/messages", json=ASK, headers={"x-api-key": key["key"]})
    assert ask.status_code == 429, "a message is refused by the same limits"
    assert count(gateway, key["key"]).status_code == 200


def test_count_tokens_for_a_model_outside_the_allow_list_is_forbidden(gateway, upstream):
    _, key = team_key(gateway, allowed_models=["anthropic/claude-opus-4.8"])
    response = count(gateway, key["key"])
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert upstream_counts(upstream) == 0


def test_count_tokens_with_a_key_revoked_a_moment_ago_is_refused(gateway, upstream):
    _, key = team_key(gateway)
    assert count(gateway, key["key"]).status_code == 200  # the key is now cached as valid
    assert admin(gateway, "DELETE", f"/admin/keys/{key['id']}").status_code == 200
    response = count(gateway, key["key"])
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert upstream_counts(upstream) == 1


def test_count_tokens_with_a_key_expired_a_moment_ago_is_refused(gateway, upstream):
    _, key = team_key(gateway)
    assert count(gateway, key["key"]).status_code == 200
    assert admin(gateway, "PATCH", f"/admin/keys/{key['id']}", json={"expires_at": time.time() + 0.3}).status_code == 200
    time.sleep(0.4)
    assert count(gateway, key["key"]).status_code == 401


def test_count_tokens_leaves_a_zero_cost_usage_record(gateway, upstream, usage_db):
    team, key = team_key(gateway)
    answer = count(gateway, key["key"])
    assert answer.status_code == 200
    [record] = records(usage_db, team, 1)
    assert record["request_id"] == answer.headers["request-id"]
    assert record["key_id"] == key["id"]
    assert record["status"] == 200
    assert record["model_requested"] == "claude-sonnet-4-5" and record["model"] == SONNET
    assert record["cost_usd"] == 0
    assert record["input_tokens"] == record["output_tokens"] == 0


def test_a_refused_count_is_recorded_with_its_status(gateway, upstream, usage_db):
    team, key = team_key(gateway, rpm=1)
    assert [count(gateway, key["key"]).status_code for _ in range(2)] == [200, 429]
    found = records(usage_db, team, 2)
    assert sorted(r["status"] for r in found) == [200, 429]
    assert {r["limited_by"] for r in found} == {None, "rpm"}
