"""Fixtures shared by the whole suite: fake upstreams on loopback and a gateway in front of them."""
from __future__ import annotations

import os
import tempfile

import httpx
import pytest

from tests.fakes.anthropic import AnthropicFake
from tests.gateway_server import GatewayThread

# What parallel workers share: the ports handed out, the `alone` mark.
pytest_plugins = ["tests.workers"]

# Gateways the tests start as processes keep their embedded record store out of the work tree.
os.environ.setdefault("GATEWAY_DATA_DIR", tempfile.mkdtemp(prefix="gateway-test-data-"))

TEAM_KEY = "sk-test-team-a-0001"
OTHER_TEAM_KEY = "sk-test-team-b-0002"
ADMIN_KEY = "sk-test-admin-0000"


@pytest.fixture(scope="session")
def anthropic_upstream():
    with AnthropicFake() as fake:
        yield fake


@pytest.fixture
def upstream(anthropic_upstream):
    anthropic_upstream.reset()
    anthropic_upstream.default = None
    yield anthropic_upstream


def base_settings(anthropic_url: str, **extra) -> dict:
    settings = {
        "providers": {"anthropic": {"base_url": anthropic_url, "api_key": "sk-upstream-secret-anthropic"}},
        "keys": [{"key": TEAM_KEY, "team": "team-a"}, {"key": OTHER_TEAM_KEY, "team": "team-b"}],
        "admin_key": ADMIN_KEY,
        # Error-mapping tests see each upstream answer once; retry behaviour has tests of its own.
        "retries": {"per_endpoint": 1},
    }
    settings.update(extra)
    return settings


@pytest.fixture(scope="session")
def gateway(anthropic_upstream):
    with GatewayThread(**base_settings(anthropic_upstream.url)) as running:
        yield running


@pytest.fixture
def client(gateway):
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": TEAM_KEY}, timeout=30) as c:
        yield c
