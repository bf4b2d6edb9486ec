"""Fixtures for the shared store suite: every test runs against the in-memory store and a real
redis-server; tests that name `ALL_BACKENDS` also run against a three-node Redis Cluster.

One server (and one cluster) per session, flushed before each test. `replica` is a second store
sharing the first one's state, as another gateway replica would (for memory: the same store).
"""
from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.store.base import KeyRecord, Limits, Store, Team, create_store
from tests.redis_server import redis_cluster, redis_server  # noqa: F401  (session fixtures)

BACKENDS = ["memory", "redis"]
ALL_BACKENDS = ["memory", "redis", "cluster"]
NOW = 1_736_942_400.0  # 2025-01-15T12:00:00Z: a fixed clock for tests that pass `now`


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    if backend == "memory":
        return None
    servers = request.getfixturevalue("redis_cluster" if backend == "cluster" else "redis_server")
    servers.flush()
    return servers.url


@pytest.fixture
def store_options() -> dict[str, Any]:
    """Parametrize (indirectly or by name) to build the stores with other StoreOptions."""
    return {}


# The Redis stores here wait out a loaded machine (the suite runs on parallel workers): a burst of
# hundreds of admissions on a fresh store can outlast the defaults (0.3 s to connect, 0.5 s a read,
# 1 s an operation) without anything being wrong. The defaults are what test_redis_backend measures,
# with stores of its own.
PATIENT = {"connect_timeout": 5.0, "socket_timeout": 5.0, "operation_timeout": 10.0}


def open_store(store_url: str | None, **options: Any) -> Store:
    """create_store, with the patient timeouts on Redis (unless `options` name others)."""
    return create_store(store_url, **(options if store_url is None else {**PATIENT, **options}))


@pytest.fixture
async def store(store_url: str | None, store_options: dict[str, Any]) -> AsyncIterator[Store]:
    s = open_store(store_url, **store_options)
    yield s
    await s.close()


@pytest.fixture
async def replica(store: Store, store_url: str | None,
                  store_options: dict[str, Any]) -> AsyncIterator[Store]:
    if store_url is None:
        yield store
        return
    s = open_store(store_url, **store_options)
    yield s
    await s.close()


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture
def make_team(store: Store) -> Callable[..., Awaitable[Team]]:
    async def make(name: str = "team-a", **limits: Any) -> Team:
        return await store.create_team(Team(name=name, limits=Limits(**limits), created_at=NOW))
    return make


@pytest.fixture
def make_key(store: Store) -> Callable[..., Awaitable[KeyRecord]]:
    async def make(key_id: str = "key-1", team: str = "team-a", *,
                   expires_at: float | None = None, **limits: Any) -> KeyRecord:
        key = KeyRecord(id=key_id, team=team, prefix=f"sk-{key_id}"[:12],
                        secret_hash=secret_hash(f"secret-{key_id}"), name=key_id,
                        created_at=NOW, expires_at=expires_at, limits=Limits(**limits))
        await store.create_key(key)
        return key
    return make
