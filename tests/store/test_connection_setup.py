"""A Redis that refuses the connection's setup (a wrong password, a database that does not exist)
reads as an unreachable store, and every connection tried is closed again."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from gateway.store.base import AdmissionRequest, StoreUnavailable, create_store
from gateway.store.resp import PipelinedRedis, encode_arguments, join_command
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
PASSWORD = "correct-horse-battery"


class PasswordRedis(RedisServer):
    def command_line(self) -> list[str]:
        return super().command_line() + ["--requirepass", PASSWORD]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=2,
                           decode_responses=True)


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[PasswordRedis]:
    with PasswordRedis() as server:
        yield server


def connected_clients(server: RedisServer) -> int:
    with server.client() as c:
        return int(c.info("clients")["connected_clients"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("url", [
    "redis://:wrong-password@127.0.0.1:{port}/0",
    "redis://:" + PASSWORD + "@127.0.0.1:{port}/99",  # SELECT 99: no such database
], ids=["wrong_password", "missing_database"])
async def test_a_refused_connection_setup_raises_connection_error_and_closes_the_connection(locked_redis, url):
    client = PipelinedRedis(url.format(port=locked_redis.port), connect_timeout=1, operation_timeout=1)
    before = connected_clients(locked_redis)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await client.execute("PING")
    # A socket is closed on the event loop's next turn, and the server notices it on its own.
    for _ in range(200):
        if connected_clients(locked_redis) == before:
            break
        await asyncio.sleep(0.01)
    assert connected_clients(locked_redis) == before, "every refused connection was closed"
    client.close()


async def test_admission_with_a_wrong_password_is_store_unavailable_not_an_error(locked_redis):
    store = create_store(f"redis://:wrong-password@127.0.0.1:{locked_redis.port}/0")
    request = AdmissionRequest(team="team-a", key_id="key-1", request_id="req-1", tokens=10, cost_usd=0.0,
                               model="anthropic/claude-sonnet-4.6", now=1_736_942_400.0)
    with pytest.raises(StoreUnavailable):
        await store.admit(request)
    await store.close()


async def test_a_command_encoded_in_parts_is_the_command_its_arguments_make(locked_redis):
    client = PipelinedRedis(f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/0", connect_timeout=1,
                            operation_timeout=1)
    head, tail = encode_arguments(("RPUSH", "parts")), encode_arguments(("é\nx", 7, 2.5))
    assert await client.execute_encoded(join_command(5, (head, tail))) == 3
    with locked_redis.client() as c:
        assert c.lrange("parts", 0, -1) == ["é\nx", "7", "2.5"]
    client.close()
