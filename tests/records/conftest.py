"""Record stores on both backends: a fresh SQLite file, or a fresh database on the session's
PostgreSQL server. The same tests run on both (SQLite parity)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.records import create_record_store
from gateway.records.base import RecordStore
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.db"
    server = request.getfixturevalue("postgres_server")
    server.reset()
    return server.url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[RecordStore]:
    store = create_record_store(db_url)
    await store.open(migrate=True)
    try:
        yield store
    finally:
        await store.close()
