"""Fake search providers for the session (reset per test) and an upstream client to call them with."""
from __future__ import annotations

import pytest

from gateway.upstream import Client
from tests import redis_server as redis_servers
from tests.fakes.search import BraveFake, ExaFake, SearxngFake, TavilyFake

redis_server = redis_servers.redis_server  # the session fixture, for the cache's tests on Redis


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fakes():
    servers = {"searxng": SearxngFake(), "brave": BraveFake(), "tavily": TavilyFake(), "exa": ExaFake()}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def fake_servers(fakes):
    for server in fakes.values():
        server.reset()
    return fakes


@pytest.fixture
async def client():
    c = Client(connect_timeout=2.0)
    yield c
    await c.close()
