"""`metrics_token`: /metrics answers only a scraper that sends it as Bearer."""
from __future__ import annotations

import httpx
import pytest

from tests.gateway_server import GatewayThread


@pytest.fixture(scope="module")
def guarded():
    with GatewayThread(demo=True, demo_key="sk-demo-metrics-token-1", metrics_token="metrics-secret-1") as running:
        yield running


def test_metrics_without_the_token_is_401_in_the_error_envelope(guarded):
    for headers in ({}, {"authorization": "Bearer wrong-token"}, {"authorization": "metrics-secret-1"}):
        response = httpx.get(guarded.url + "/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json()["type"] == "error" and response.json()["error"]["type"] == "authentication_error"
        assert "metrics-secret-1" not in response.text


def test_metrics_with_the_token_as_bearer_are_served(guarded):
    response = httpx.get(guarded.url + "/metrics", headers={"authorization": "Bearer metrics-secret-1"})
    assert response.status_code == 200 and "gateway_inflight_requests" in response.text


def test_metrics_stay_open_without_a_token(gateway):
    assert httpx.get(gateway.url + "/metrics").status_code == 200
