"""Budget alerts from two `gateway serve` processes sharing a real Redis: each threshold of a
team's (or a key's own) budget fires one signed webhook per period, whichever replica settled the
requests that crossed it; failed deliveries are retried, and what finally happened is visible
through `GET /admin/alerts`.

The test model prices input at 0 and output at $100 per million tokens, and the fake answers with
exactly `max_tokens` output tokens: each request costs exactly $0.01.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import Reply, wait_for
from tests.fakes.webhook import WebhookReceiver
from tests.gateway.replicas import Replicas
from tests.postgres_server import PostgresServer, postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (session fixture)

ADMIN_KEY = "sk-test-alerts-admin-0000"
SECRET = "alert-signing-secret"
MODEL = "test/metered"
ASK = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def replicas(fake, receiver, redis_server: RedisServer, postgres_server: PostgresServer,  # noqa: F811
             tmp_path_factory) -> Iterator[Replicas]:
    redis_server.flush()
    config = {
        "admin_key": ADMIN_KEY, "redis_url": redis_server.url,
        "usage_db_url": postgres_server.database("alerts"),
        "providers": {"anthropic": {"base_url": fake.url, "api_key": "sk-upstream-alerts"}},
        "models": [{"id": MODEL, "display_name": MODEL, "context_length": 100_000, "max_output": 4096,
                    "endpoints": [{"provider": "anthropic", "upstream_model": "metered-model",
                                   "pricing": {"input": 0.0, "output": 100.0}}]}],
        "alerts": {"webhook_url": receiver.url + "/hooks/budget", "secret": SECRET,
                   "thresholds": [0.5, 0.8, 1.0], "attempts": 3, "backoff": 0.05},
    }
    with Replicas(config, tmp_path_factory.mktemp("alerts"), count=2, admin_key=ADMIN_KEY) as running:
        yield running


def spend(replicas: Replicas, secret: str, requests: int) -> list[int]:
    """`requests` requests, half through each replica, eight at a time."""
    def one(i: int) -> int:
        return httpx.post(replicas.urls[i % 2] + "/v1/messages", json=ASK, timeout=10,
                          headers={"x-api-key": secret, "anthropic-version": "2023-06-01"}).status_code
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(requests)))


def alerts_for(receiver: WebhookReceiver, team: str) -> list[dict]:
    return [a for a in receiver.alerts() if a.get("team") == team or team in a.get("text", "")]


def test_each_threshold_of_a_daily_budget_fires_one_signed_webhook_across_two_replicas(replicas, receiver):
    team = "al-" + uuid.uuid4().hex[:8]
    replicas.create_team(team, budget_daily_usd=0.10)
    key = replicas.create_key(team)
    statuses = spend(replicas, key["key"], 14)
    assert statuses.count(200) == 10 and set(statuses) == {200, 429}
    assert wait_for(lambda: len(alerts_for(receiver, team)) >= 3, timeout=10)
    time.sleep(1.5)  # both replicas have flushed and checked again since: nothing more may come
    alerts = alerts_for(receiver, team)
    assert sorted(a["threshold"] for a in alerts) == [0.5, 0.8, 1.0]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    for alert in alerts:
        assert (alert["budget"], alert["period"], alert["budget_usd"], alert["key_id"]) == ("daily", day, 0.10, None)
        assert alert["spent"] >= alert["threshold"] * 0.10 - 1e-9
    monthly = [a for a in alerts if a["budget"] == "monthly"]
    assert monthly == []  # the team has no monthly budget


def test_a_keys_own_budget_fires_its_own_alerts(replicas, receiver):
    team = "ak-" + uuid.uuid4().hex[:8]
    replicas.create_team(team)
    key = replicas.create_key(team, budget_monthly_usd=0.05)
    assert spend(replicas, key["key"], 5) == [200] * 5
    assert wait_for(lambda: len(alerts_for(receiver, team)) >= 3, timeout=10)
    time.sleep(1.0)
    alerts = alerts_for(receiver, team)
    assert sorted(a["threshold"] for a in alerts) == [0.5, 0.8, 1.0]
    assert {(a["key_id"], a["budget"], a["period"]) for a in alerts} == {
        (key["id"], "monthly", time.strftime("%Y-%m", time.gmtime()))}


def test_a_team_can_send_its_alerts_elsewhere_in_slack_format(replicas, fake):
    with WebhookReceiver("team-own-secret") as own:
        team = "as-" + uuid.uuid4().hex[:8]
        replicas.create_team(team, budget_daily_usd=0.02,
                             alerts={"webhook_url": own.url + "/slack", "secret": "team-own-secret",
                                     "thresholds": [1.0], "format": "slack"})
        shown = replicas.admin("GET", f"/admin/teams/{team}").json()["alerts"]
        assert shown["secret"] is None and shown["secret_set"] is True  # never shown back
        key = replicas.create_key(team)
        assert spend(replicas, key["key"], 2) == [200, 200]
        assert wait_for(lambda: len(own.requests) >= 1, timeout=10)
        time.sleep(1.0)
        [alert] = own.alerts()
        assert set(alert) == {"text"} and team in alert["text"] and "daily budget" in alert["text"]


def test_a_failing_webhook_is_retried_and_its_outcome_shown(replicas, receiver):
    team = "ar-" + uuid.uuid4().hex[:8]
    replicas.create_team(team, budget_daily_usd=0.01, alerts={"thresholds": [1.0]})
    key = replicas.create_key(team)
    before = len(receiver.requests)
    receiver.enqueue(Reply(status=500), Reply(status=503))  # the first two deliveries fail
    assert spend(replicas, key["key"], 1) == [200]

    def delivered():
        rows = replicas.admin("GET", "/admin/alerts").json()["data"]
        return [r for r in rows if r["team"] == team]
    assert wait_for(lambda: delivered(), timeout=10)
    [row] = delivered()
    assert row["delivered"] is True and row["attempts"] == 3 and row["status"] == 204
    assert row["webhook"] == receiver.url and "hooks" not in row["webhook"]  # a URL's path may hold a secret
    tries = receiver.requests[before:]
    assert len(tries) == 3 and len({t.body for t in tries}) == 1  # the same signed body each time


def test_a_webhook_that_never_answers_well_is_shown_as_failed(replicas, receiver):
    team = "af-" + uuid.uuid4().hex[:8]
    with WebhookReceiver() as broken:
        broken.default = Reply(status=500)
        replicas.create_team(team, budget_daily_usd=0.01,
                             alerts={"webhook_url": broken.url + "/x", "thresholds": [1.0]})
        key = replicas.create_key(team)
        assert spend(replicas, key["key"], 1) == [200]

        def rows():
            return [r for r in replicas.admin("GET", "/admin/alerts").json()["data"] if r["team"] == team]
        assert wait_for(lambda: rows(), timeout=10)
        [row] = rows()
        assert row["delivered"] is False and row["attempts"] == 3 and row["error"] == "HTTP 500"
        assert len(broken.requests) == 3
        # The team names its own webhook but no secret: the gateway's secret signs it.
        expected = "sha256=" + hmac.new(SECRET.encode(), broken.requests[0].body, hashlib.sha256).hexdigest()
        assert broken.requests[0].headers["x-gateway-signature"] == expected
