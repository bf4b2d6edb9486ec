"""An answer that failed after retries and fallbacks carries the same debugging headers as a success:
every attempt in `x-gateway-attempts`, the last provider tried in `x-gateway-provider`."""
from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEAM_KEY
from tests.fakes.anthropic import AnthropicFake, error_reply
from tests.gateway_server import GatewayThread

PROVIDERS = ("p-one", "p-two")


@pytest.fixture(scope="module")
def fakes():
    servers = {name: AnthropicFake().start() for name in PROVIDERS}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gw(fakes):
    settings = {
        "providers": {name: {"protocol": "anthropic", "base_url": fake.url, "api_key": f"sk-upstream-{name}"}
                      for name, fake in fakes.items()},
        "models": [{"id": "test/headers", "display_name": "Headers", "context_length": 100000, "max_output": 4096,
                    "endpoints": [{"provider": name, "upstream_model": f"{name}-model",
                                   "pricing": {"input": price, "output": price * 5}}
                                  for name, price in (("p-one", 1.0), ("p-two", 2.0))]}],
        "keys": [{"key": TEAM_KEY, "team": "team-a"}],
        "retries": {"per_endpoint": 2, "backoff_base": 0.001, "backoff_max": 0.002},
        "cooldowns": {"failures": 100},
    }
    with GatewayThread(**settings) as running:
        yield running


def ask(gw, **body) -> httpx.Response:
    payload = {"model": "test/headers", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
               "provider": {"sort": "price"}, **body}
    return httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=payload, timeout=20)


def test_an_error_after_retries_and_fallbacks_lists_every_attempt_and_the_last_provider(gw, fakes):
    fakes["p-one"].enqueue(error_reply(503, "api_error", "down"), error_reply(502, "api_error", "down"))
    fakes["p-two"].enqueue(error_reply(529, "overloaded_error", "busy"), error_reply(529, "overloaded_error", "busy"))
    response = ask(gw)
    assert response.status_code == 529
    assert response.headers["x-gateway-attempts"] == \
        "p-one/test/headers=503,p-one/test/headers=502,p-two/test/headers=529,p-two/test/headers=529"
    assert response.headers["x-gateway-provider"] == "p-two"
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["type"] == "overloaded_error"


def test_a_client_error_passed_through_names_the_provider_that_answered_it(gw, fakes):
    fakes["p-one"].enqueue(error_reply(400, "invalid_request_error", "messages: bad"))
    response = ask(gw)
    assert response.status_code == 400
    assert response.headers["x-gateway-attempts"] == "p-one/test/headers=400"
    assert response.headers["x-gateway-provider"] == "p-one"


def test_a_failed_stream_before_its_first_byte_keeps_the_headers(gw, fakes):
    for name in PROVIDERS:
        fakes[name].enqueue(error_reply(500, "api_error", "boom"), error_reply(500, "api_error", "boom"))
    response = ask(gw, stream=True)
    assert response.status_code == 502
    assert response.headers["x-gateway-attempts"].count("=500") == 4
    assert response.headers["x-gateway-provider"] == "p-two"
