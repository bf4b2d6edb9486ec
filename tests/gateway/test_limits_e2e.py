"""Teams, keys, rate limits, concurrency and budgets, end to end through real `gateway serve` processes.

Each store backend runs as a deployment a user could run: one process on the in-memory store (more
than one is refused without Redis), two processes sharing one Redis, two sharing a three-node Redis
Cluster. Every process points provider `anthropic` at one AnthropicFake, and every team and key
is made through the admin API. Limits must hold across the replicas and under concurrency.

The test model prices input at 0 and output at $100 per million tokens, and the fake answers with
exactly `max_tokens` output tokens: a request with `max_tokens: 100` reserves its worst case and
costs exactly $0.01, so the ideal number of requests a budget admits is exact.
"""
from __future__ import annotations

import asyncio
import calendar
import contextlib
import time
import uuid
from collections.abc import Iterator
from fractions import Fraction

import httpx
import pytest

from tests.fakes.anthropic import AnthropicFake, error_reply, sse_reply, stream_events
from tests.fakes.base import Reply
from tests.gateway.replicas import Replicas
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_cluster, redis_server  # noqa: F401  (session fixtures)

ADMIN_KEY = "sk-test-limits-admin-0000"
METERED = "test/metered"
OTHER = "test/other"
MAX_TOKENS = 100
OUTPUT_PRICE = 100.0  # USD per million output tokens: 100 tokens cost $0.01
REQUEST_COST = Fraction(MAX_TOKENS) * Fraction(OUTPUT_PRICE) / 1_000_000
ASK = {"model": METERED, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "hi"}]}
# Long enough that a replica that cached a key cannot have forgotten it during a test.
KEY_CACHE_TTL_S = 60.0


def model_entry(model_id: str, upstream_model: str) -> dict:
    return {"id": model_id, "display_name": model_id, "context_length": 100_000, "max_output": 4096,
            "endpoints": [{"provider": "anthropic", "upstream_model": upstream_model,
                           "pricing": {"input": 0.0, "output": OUTPUT_PRICE}}]}


def gateway_config(upstream_url: str, redis_url: str | None, usage_db_url: str | None = None) -> dict:
    config = {
        "admin_key": ADMIN_KEY,
        "providers": {"anthropic": {"base_url": upstream_url, "api_key": "sk-upstream-limits"}},
        "models": [model_entry(METERED, "metered-model"), model_entry(OTHER, "other-model")],
        "retries": {"per_endpoint": 1, "backoff_base": 0.01, "backoff_max": 0.02},
        "key_cache_ttl": KEY_CACHE_TTL_S,
    }
    if redis_url is not None:
        config["redis_url"] = redis_url
        config["usage_db_url"] = usage_db_url
    return config


# -- deployments, one per store backend, started once for the module ------------------------------
@pytest.fixture(scope="module")
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


@pytest.fixture(autouse=True)
def clean_fake(fake: AnthropicFake) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def memory_replicas(fake, tmp_path_factory) -> Iterator[Replicas]:
    config = gateway_config(fake.url, None)
    with Replicas(config, tmp_path_factory.mktemp("memory"), count=1, admin_key=ADMIN_KEY) as replicas:
        yield replicas


def _two_replicas(fake, servers, database: str, folder) -> Iterator[Replicas]:
    """Two gateways sharing the (flushed) Redis behind `servers` and one PostgreSQL database."""
    servers.flush()
    with Replicas(gateway_config(fake.url, servers.url, database), folder, count=2, admin_key=ADMIN_KEY) as replicas:
        yield replicas


@pytest.fixture(scope="module")
def redis_replicas(fake, redis_server, postgres_server, tmp_path_factory) -> Iterator[Replicas]:  # noqa: F811
    database = postgres_server.database("limits_redis")
    yield from _two_replicas(fake, redis_server, database, tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="module")
def cluster_replicas(fake, redis_cluster, postgres_server, tmp_path_factory) -> Iterator[Replicas]:  # noqa: F811
    database = postgres_server.database("limits_cluster")
    yield from _two_replicas(fake, redis_cluster, database, tmp_path_factory.mktemp("cluster"))


@pytest.fixture(params=["memory", "redis", "cluster"])
def replicas(request) -> Replicas:
    return request.getfixturevalue(f"{request.param}_replicas")


@pytest.fixture(params=["redis", "cluster"])
def shared_replicas(request) -> Replicas:
    """Two processes sharing one store."""
    return request.getfixturevalue(f"{request.param}_replicas")


# -- traffic ------------------------------------------------------------------------------------
def new_team(replicas: Replicas, **limits) -> str:
    name = f"team-{uuid.uuid4().hex[:12]}"
    replicas.create_team(name, **limits)
    return name


def post(url: str, key: str, body: dict = ASK) -> httpx.Response:
    return httpx.post(url + "/v1/messages", headers={"x-api-key": key}, json=body, timeout=30)


def send_at_once(urls: list[str], key: str, count: int, body: dict = ASK) -> list[httpx.Response]:
    """`count` requests all in flight together, spread over the replicas in turn."""
    async def run() -> list[httpx.Response]:
        # One connection per request: a pool limit would queue them and serialise the burst.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*(
                client.post(urls[i % len(urls)] + "/v1/messages", headers={"x-api-key": key}, json=body)
                for i in range(count)))
    return asyncio.run(run())


def error_type(response: httpx.Response) -> str:
    return response.json()["error"]["type"]


def reset_epoch(response: httpx.Response) -> float:
    return calendar.timegm(time.strptime(response.headers["anthropic-ratelimit-requests-reset"],
                                         "%Y-%m-%dT%H:%M:%SZ"))


def served_by(response: httpx.Response) -> str:
    return f"{response.request.url.scheme}://{response.request.url.host}:{response.request.url.port}"


def upstream_models(fake: AnthropicFake) -> list[str]:
    return [r.json()["model"] for r in fake.requests if r.path == "/v1/messages"]


# -- requests per minute ------------------------------------------------------------------------
def test_rpm_admits_exactly_the_limit_out_of_a_concurrent_burst_across_replicas(replicas, fake):
    team = new_team(replicas, rpm=100)
    key = replicas.create_key(team)["key"]
    for url in replicas.urls:  # each replica has the key cached, so neither starts the burst late
        assert httpx.get(url + "/v1/models", headers={"x-api-key": key}, timeout=30).status_code == 200
    started = time.time()

    responses = send_at_once(replicas.urls, key, 300)

    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(admitted) == 100, sorted({r.status_code for r in responses})
    assert {r.status_code for r in refused} == {429}
    assert {served_by(r) for r in admitted} == set(replicas.urls), "every replica admitted some"
    for r in admitted:
        assert r.headers["anthropic-ratelimit-requests-limit"] == "100"
        assert started + 59 <= reset_epoch(r) <= time.time() + 61
    # One shared window: each admission took the next slot, whichever replica made it.
    remaining = sorted(int(r.headers["anthropic-ratelimit-requests-remaining"]) for r in admitted)
    assert remaining == list(range(100))
    for r in refused:
        assert error_type(r) == "rate_limit_error"
        assert 1 <= int(r.headers["retry-after"]) <= 61
        assert r.headers["anthropic-ratelimit-requests-limit"] == "100"
        assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert started + 59 <= reset_epoch(r) <= time.time() + 61
    assert len(upstream_models(fake)) == 100, "a refused request never reaches the upstream"
    row = replicas.wait_recorded(team, 300)
    assert row["cost_usd"] == pytest.approx(float(100 * REQUEST_COST))


def test_a_key_rpm_below_the_team_rpm_narrows_it_for_that_key_only(replicas):
    team = new_team(replicas, rpm=100)
    narrow = replicas.create_key(team, rpm=5)["key"]
    wide = replicas.create_key(team)["key"]

    responses = send_at_once(replicas.urls, narrow, 12)

    assert sum(r.status_code == 200 for r in responses) == 5
    for r in responses:
        assert r.headers["anthropic-ratelimit-requests-limit"] == "5"
        if r.status_code != 200:
            assert r.status_code == 429 and error_type(r) == "rate_limit_error"
            assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
            assert "retry-after" in r.headers
    # The team's window counted the five: another key of the team sees the team's limit, less them.
    other = post(replicas.urls[-1], wide)
    assert other.status_code == 200
    assert other.headers["anthropic-ratelimit-requests-limit"] == "100"
    assert other.headers["anthropic-ratelimit-requests-remaining"] == "94"


# -- budgets ------------------------------------------------------------------------------------
def test_daily_budget_admits_the_ideal_number_of_requests_and_is_never_overspent(replicas):
    budget = Fraction("1.00")
    ideal = int(budget // REQUEST_COST)
    team = new_team(replicas, budget_daily_usd=float(budget))
    key = replicas.create_key(team)["key"]

    burst = send_at_once(replicas.urls, key, 150)
    admitted = [r for r in burst if r.status_code == 200]
    assert len(admitted) <= ideal
    for r in burst:
        if r.status_code != 200:
            assert r.status_code == 429 and error_type(r) == "rate_limit_error"
            assert "budget" in r.json()["error"]["message"]
            assert int(r.headers["retry-after"]) >= 1
    for r in admitted:
        assert r.json()["usage"]["cost"] == pytest.approx(float(REQUEST_COST)), "the cost met the reservation"
    sent = len(burst)
    replicas.wait_recorded(team, sent)  # every reservation of the burst is settled

    # Then one at a time, each seeing the settled spend, until the budget refuses.
    for i in range(ideal + 5):
        response = post(replicas.urls[i % len(replicas.urls)], key)
        sent += 1
        if response.status_code != 200:
            assert response.status_code == 429 and error_type(response) == "rate_limit_error"
            break
        admitted.append(response)
        replicas.wait_recorded(team, sent)
    else:
        pytest.fail("the budget never refused a request")

    row = replicas.wait_recorded(team, sent)
    assert row["cost_usd"] <= float(budget)
    assert row["cost_usd"] == pytest.approx(float(len(admitted) * REQUEST_COST))
    assert abs(len(admitted) - ideal) <= 1, f"admitted {len(admitted)}, ideal {ideal}"


# -- concurrency --------------------------------------------------------------------------------
def slow_stream() -> Reply:
    """A streamed answer lasting about 1.5 s: ample time to try a third request while it runs."""
    events = stream_events(["tok "] * 24, model="metered-model", output_tokens=24)
    return sse_reply(events, delay_between=0.05)


async def two_open_streams_and_a_third_request(first: str, second: str,
                                               key: str) -> tuple[httpx.Response, list[bytes]]:
    """Open a stream on each replica, send a third request while both run, then read the streams."""
    headers = {"x-api-key": key}
    streamed = {**ASK, "stream": True}
    async with httpx.AsyncClient(timeout=30) as client, contextlib.AsyncExitStack() as streams:
        one = await streams.enter_async_context(
            client.stream("POST", first + "/v1/messages", headers=headers, json=streamed))
        two = await streams.enter_async_context(
            client.stream("POST", second + "/v1/messages", headers=headers, json=streamed))
        assert (one.status_code, two.status_code) == (200, 200)
        third = await client.post(first + "/v1/messages", headers=headers, json=ASK)
        bodies = [await one.aread(), await two.aread()]
    return third, bodies


def test_concurrency_limit_refuses_a_third_request_while_two_streams_are_open(replicas, fake):
    team = new_team(replicas, max_concurrent=2)
    key = replicas.create_key(team)["key"]
    first, second = replicas.urls[0], replicas.urls[-1]

    for turn in (1, 2):  # the second turn is admitted only if the first turn's leases were released
        fake.enqueue(slow_stream(), slow_stream())
        third, bodies = asyncio.run(two_open_streams_and_a_third_request(first, second, key))
        assert third.status_code == 429
        assert error_type(third) == "rate_limit_error"
        assert "concurrent" in third.json()["error"]["message"]
        assert int(third.headers["retry-after"]) >= 1
        for body in bodies:
            assert body.rstrip().endswith(b'"type":"message_stop"}')
        replicas.wait_recorded(team, 3 * turn)

    assert post(first, key).status_code == 200


# -- model allow-lists ----------------------------------------------------------------------------
def test_a_key_allowed_some_models_gets_permission_error_for_others(replicas, fake):
    team = new_team(replicas)
    key = replicas.create_key(team, allowed_models=[METERED])["key"]

    for url in replicas.urls:
        assert post(url, key).status_code == 200
        refused = post(url, key, {**ASK, "model": OTHER})
        assert refused.status_code == 403
        assert error_type(refused) == "permission_error"
        assert OTHER in refused.json()["error"]["message"]
    assert "other-model" not in upstream_models(fake)


def test_a_team_allow_list_binds_every_key_of_the_team(replicas, fake):
    team = new_team(replicas, allowed_models=[METERED])
    key = replicas.create_key(team)["key"]

    assert post(replicas.urls[-1], key).status_code == 200
    refused = post(replicas.urls[-1], key, {**ASK, "model": OTHER})
    assert refused.status_code == 403 and error_type(refused) == "permission_error"
    assert "other-model" not in upstream_models(fake)


def test_a_fallback_model_outside_the_allow_list_is_refused_before_any_upstream_call(redis_replicas, fake):
    team = new_team(redis_replicas)
    key = redis_replicas.create_key(team, allowed_models=[METERED])["key"]
    fake.enqueue(error_reply(529, "overloaded_error", "busy"))  # the allowed model fails...

    response = post(redis_replicas.urls[0], key, {**ASK, "models": [OTHER]})

    # ...and the fallback the key may not use must not serve instead.
    assert "other-model" not in upstream_models(fake)
    assert response.status_code == 403
    assert error_type(response) == "permission_error"


def test_a_key_allowed_some_models_lists_only_those(redis_replicas):
    team = new_team(redis_replicas)
    key = redis_replicas.create_key(team, allowed_models=[METERED])["key"]
    headers = {"x-api-key": key}

    listed = httpx.get(redis_replicas.urls[0] + "/v1/models", headers=headers, params={"limit": 1000})
    other = httpx.get(redis_replicas.urls[0] + f"/v1/models/{OTHER}", headers=headers)

    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == [METERED]
    assert other.status_code == 404


# -- revocation -----------------------------------------------------------------------------------
def test_a_key_revoked_on_one_replica_is_refused_by_another_at_once(shared_replicas):
    a, b = shared_replicas.urls
    team = new_team(shared_replicas)
    created = shared_replicas.create_key(team, via=0)
    key = created["key"]
    assert post(b, key).status_code == 200  # b now holds the key in its lookup cache
    cached_at = time.monotonic()

    revoked = shared_replicas.admin("DELETE", f"/admin/keys/{created['id']}", via=0)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    refused = post(b, key)

    assert time.monotonic() - cached_at < KEY_CACHE_TTL_S, "b's cached lookup was still fresh"
    assert refused.status_code == 401
    assert error_type(refused) == "authentication_error"
    assert post(a, key).status_code == 401
