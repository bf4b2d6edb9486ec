"""The authentication cache against a real Redis: made-up keys cannot push out the keys it holds
for an outage, and its size stays bounded."""
from __future__ import annotations

import time

import pytest

from gateway.auth import Authenticator, secret_hash
from gateway.errors import AuthenticationFailed, Overloaded
from gateway.store.base import KeyRecord, Team, create_store
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
SECRET = "sk-gw-a-real-key-of-team-a-0000000000000"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_spray_of_made_up_keys_evicts_no_real_key_needed_during_an_outage():
    with RedisServer() as server:
        store = create_store(server.url)
        await store.create_team(Team(name="team-a", created_at=time.time()))
        await store.create_key(KeyRecord(id="key-a", team="team-a", prefix="sk-gw-a", secret_hash=secret_hash(SECRET),
                                         created_at=time.time()))
        auth = Authenticator(static_keys={}, admin_key=None, store=store, cache_ttl=0.0, max_cached=10)
        assert (await auth.authenticate([SECRET])).key_id == "key-a"
        for i in range(50):
            with pytest.raises(AuthenticationFailed):
                await auth.authenticate([f"sk-made-up-{i:04d}"], verify=False)
        server.stop()
        assert (await auth.authenticate([SECRET], verify=False)).key_id == "key-a"
        with pytest.raises(Overloaded):
            await auth.authenticate(["sk-made-up-0049"], verify=False)  # not vouched for: 529, not 401
        await store.close()
