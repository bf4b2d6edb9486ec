"""An answer that costs more than its reservation (an upstream over-reporting, a ceiling set too
low): a stream under a budget is cut with an error event naming the budget once its cost passes
what was reserved, a JSON answer is delivered, and either way the actual cost is what is charged.
Content only the upstream can size is counted upstream (count_tokens) before it is reserved."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from gateway.records.base import RequestFilter
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY, base_settings
from tests.fakes.anthropic import AnthropicFake, json_reply, message_body, sse_reply, stream_events
from tests.fakes.base import wait_for
from tests.gateway.test_usage_recording import in_database
from tests.gateway_server import GatewayThread
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

MODEL = "anthropic/claude-sonnet-4.5"  # $3 per million input tokens, $15 per million output tokens
ASK = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
URL_IMAGE = {"type": "image", "source": {"type": "url", "url": "https://images.example/cat.png"}}
BUDGET_USD = 0.2


@pytest.fixture(scope="module")
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake() as server:
        yield server


@pytest.fixture
def gateway(fake, redis_server, postgres_server) -> Iterator[GatewayThread]:  # noqa: F811
    redis_server.flush()
    postgres_server.reset()
    fake.reset()
    settings = base_settings(fake.url, redis_url=redis_server.url, usage_db_url=postgres_server.url,
                             usage_flush_interval=0.05,
                             teams=[{"name": "team-a", "budget_daily_usd": BUDGET_USD}, {"name": "team-b"}])
    with GatewayThread(**settings) as running:
        running.db_url = postgres_server.url
        yield running


def record_of(gateway, team: str, request_id: str) -> dict:
    found: list[dict] = []

    def recorded() -> bool:
        found[:] = [r for r in in_database(gateway.db_url, "requests", RequestFilter(team=team), limit=100)[0]
                    if r["request_id"] == request_id]
        return bool(found)
    assert wait_for(recorded, timeout=5)
    return found[0]


def over_reporting_stream() -> list[bytes]:
    # 100,000 input tokens ($0.30) for a two-letter question: far past what its bytes reserved.
    return stream_events(["tok "] * 40, input_tokens=100_000, output_tokens=40)


def test_a_stream_costing_past_its_reservation_is_cut_with_an_error_naming_the_budget(fake, gateway):
    fake.enqueue(sse_reply(over_reporting_stream(), delay_between=0.01))
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": TEAM_KEY}, timeout=10) as client:
        response = client.post("/v1/messages", json={**ASK, "stream": True})
        assert response.status_code == 200
        events = [block for block in response.text.split("\n\n") if block]
        assert events[0].startswith("event: message_start")
        assert events[-1].startswith("event: error")
        error = orjson.loads(events[-1].split("data: ", 1)[1])["error"]
        assert error["type"] == "rate_limit_error" and "budget" in error["message"] and "team-a" in error["message"]
        assert not any(e.startswith("event: message_stop") for e in events)
        assert sum(e.startswith("event: content_block_delta") for e in events) < 40
        assert wait_for(lambda: fake.disconnects == 1), "the upstream stream was closed, ending its generation"
        record = record_of(gateway, "team-a", response.headers["request-id"])
        assert (record["status"], record["limited_by"], record["input_tokens"]) == (429, "budget", 100_000)
        assert record["estimated"] and record["output_tokens"] < 40
        assert record["cost_usd"] == pytest.approx(0.3 + record["output_tokens"] * 15e-6)
        # The actual cost is charged: the budget is spent, and says so.
        refused = client.post("/v1/messages", json=ASK)
        assert refused.status_code == 429 and "daily budget" in refused.json()["error"]["message"]


def test_a_json_answer_costing_past_its_reservation_is_delivered_and_charged(fake, gateway):
    fake.enqueue(json_reply(message_body("x", input_tokens=100_000, output_tokens=5)))
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": TEAM_KEY}, timeout=10) as client:
        response = client.post("/v1/messages", json=ASK)
        assert response.status_code == 200 and response.json()["content"] == [{"type": "text", "text": "x"}]
        record = record_of(gateway, "team-a", response.headers["request-id"])
        assert record["cost_usd"] == pytest.approx(0.3 + 5 * 15e-6)
        assert client.post("/v1/messages", json=ASK).status_code == 429


def test_without_a_budget_an_over_reporting_stream_is_not_cut(fake, gateway):
    fake.enqueue(sse_reply(over_reporting_stream()))
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": OTHER_TEAM_KEY}, timeout=10) as client:
        response = client.post("/v1/messages", json={**ASK, "stream": True})
        assert response.status_code == 200
        assert response.text.rstrip().endswith('{"type":"message_stop"}')


def test_a_text_body_is_reserved_without_counting_upstream(fake, gateway):
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": TEAM_KEY}, timeout=10) as client:
        assert client.post("/v1/messages", json=ASK).status_code == 200
    assert [r.path for r in fake.requests] == ["/v1/messages"]


def test_an_image_by_url_is_counted_upstream_and_reserved_at_that_count(fake, gateway):
    ask = {**ASK, "stream": True, "temperature": 0.5,
           "messages": [{"role": "user", "content": [URL_IMAGE, {"type": "text", "text": "what is it?"}]}]}
    # The upstream counts 70,000 tokens ($0.21): more than the $0.20 budget, so it is refused unsent.
    fake.enqueue(json_reply({"input_tokens": 70_000}))
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": TEAM_KEY}, timeout=10) as client:
        refused = client.post("/v1/messages", json=ask)
        assert refused.status_code == 429, refused.text
        assert "exceeds the 0.2 USD left of the daily budget" in refused.json()["error"]["message"]
        [count] = fake.requests
        assert count.path == "/v1/messages/count_tokens"
        counted = count.json()
        assert set(counted) == {"model", "messages"}, "count_tokens is sent only what it accepts"
        assert counted["messages"] == ask["messages"]
        # Counted smaller, it is admitted and served.
        fake.enqueue(json_reply({"input_tokens": 1_000}))
        assert client.post("/v1/messages", json=ask).status_code == 200
        assert [r.path for r in fake.requests[1:]] == ["/v1/messages/count_tokens", "/v1/messages"]
