"""The upstream HTTP/1.1 client against raw servers on loopback that write exact bytes by hand."""
from __future__ import annotations

import asyncio
import random
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from typing import Self

import pytest

from gateway.upstream import (AnswerTooLarge, Client, ConnectFailed, ConnectionBroken, PoolExhausted, Target, UpstreamError,
                              UpstreamTimeout)

# Every test runs under this bound, so a client that hangs fails the test instead of the suite.
GUARD_S = 3.0


class Peer:
    """One connection the server accepted: what it received, and ways to answer by hand."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.requests: list[bytes] = []
        self.eof = asyncio.Event()  # the client closed (or reset) the connection

    async def read_request(self) -> bytes | None:
        """The next request, head and content-length body, exactly as received; None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            request = head + await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        self.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    """A raw HTTP server on a free 127.0.0.1 port: each accepted connection runs `script(peer)`, and
    the server closes the connection when the script returns."""

    def __init__(self, script: Script, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.peers: list[Peer] = []
        self._scripts: list[asyncio.Task] = []
        self._handlers: list[asyncio.Task] = []
        self._errors: list[BaseException] = []

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._server.close()
        for task in self._scripts:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for peer in self.peers:
            peer.writer.transport.abort()
        await self._server.wait_closed()
        if exc_info[0] is None and self._errors:
            raise self._errors[0]

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def target(self, path: str = "/", scheme: str = "http") -> Target:
        return Target(self.url(path, scheme))

    @property
    def connections(self) -> int:
        return len(self.peers)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.append(asyncio.current_task())
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        # The script runs as its own task so teardown can cancel it without tripping asyncio's
        # complaint about a cancelled connection callback.
        script = asyncio.ensure_future(self.script(peer))
        self._scripts.append(script)
        try:
            await script
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception as exc:  # noqa: BLE001  (a broken script must fail its test, not vanish)
            self._errors.append(exc)
        finally:
            writer.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(test(), GUARD_S)
    asyncio.run(guarded())


def answer(status: bytes = b"200 OK", body: bytes = b"", *headers: bytes, length: bool = True) -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers]
    if length:
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


JSON = b'{"id":"msg_1","type":"message"}'
OK = answer(b"200 OK", JSON, b"content-type: application/json")


def answering(reply: bytes = OK) -> Script:
    """A keep-alive server that answers every request on a connection with the same bytes."""
    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(reply)
    return script


async def eventually(predicate: Callable[[], bool], timeout: float = 0.3) -> bool:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not predicate():
        if loop.time() > until:
            return False
        await asyncio.sleep(0.005)
    return True


async def saw_eof(peer: Peer, timeout: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(peer.eof.wait(), timeout)
    except TimeoutError:
        return False
    return True


# -- whole answers and keep-alive -------------------------------------------------------------------

def test_content_length_answer_is_read_whole_and_the_connection_is_reused():
    async def test() -> None:
        async with ScriptedServer(answering()) as server:
            client = Client()
            target = server.target("/v1/messages?beta=true")
            body = b'{"model":"m","max_tokens":1}'
            response = await client.request("POST", target, {"x-api-key": "sk-1", "content-type": "application/json"},
                                            body)
            assert response.status == 200
            assert response.headers == {"content-type": "application/json", "content-length": str(len(JSON))}
            assert await response.read() == JSON
            response.release()
            assert client.idle_connections() == 1

            again = await client.request("POST", target, {"x-api-key": "sk-1"}, b"{}")
            assert (again.status, await again.read()) == (200, JSON)
            again.release()

            assert server.connections == 1
            assert server.peers[0].requests == [
                b"POST /v1/messages?beta=true HTTP/1.1\r\n"
                b"host: 127.0.0.1:%d\r\n"
                b"x-api-key: sk-1\r\n"
                b"content-type: application/json\r\n"
                b"content-length: %d\r\n"
                b"\r\n" % (server.port, len(body)) + body,
                b"POST /v1/messages?beta=true HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nx-api-key: sk-1\r\n"
                b"content-length: 2\r\n\r\n{}" % server.port,
            ]
            await client.close()
    run(test)


def test_large_request_body_arrives_intact():
    # Bodies past 16 KiB are written as head and body separately; the server must see one request.
    body = random.Random(1).randbytes(300_000)

    async def test() -> None:
        async with ScriptedServer(answering()) as server:
            client = Client()
            response = await client.request("POST", server.target("/up"), {}, body)
            assert await response.read() == JSON
            response.release()
            [request] = server.peers[0].requests
            assert request == b"POST /up HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-length: 300000\r\n\r\n" % (
                server.port) + body
            await client.close()
    run(test)


def test_204_answer_without_a_length_ends_at_the_head_and_keeps_the_connection():
    async def test() -> None:
        async with ScriptedServer(answering(answer(b"204 No Content", length=False))) as server:
            client = Client()
            for _ in range(2):
                response = await client.request("DELETE", server.target("/x"), {})
                assert (response.status, await response.read()) == (204, b"")
                response.release()
            assert server.connections == 1
            await client.close()
    run(test)


def test_answer_saying_connection_close_is_not_reused():
    async def test() -> None:
        async with ScriptedServer(answering(answer(b"200 OK", b"bye", b"connection: close"))) as server:
            client = Client()
            for _ in range(2):
                response = await client.request("GET", server.target(), {})
                assert await response.read() == b"bye"
                response.release()
            assert server.connections == 2
            await client.close()
    run(test)


def test_repeated_headers_are_joined_and_names_are_lower_case():
    reply = answer(b"200 OK", b"ok", b"Set-Cookie: a=1", b"X-Request-ID: req_9", b"set-cookie: b=2",
                   b"Vary: accept", b"VARY: origin")

    async def test() -> None:
        async with ScriptedServer(answering(reply)) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            assert response.headers == {"set-cookie": "a=1, b=2", "x-request-id": "req_9",
                                        "vary": "accept, origin", "content-length": "2"}
            assert await response.read() == b"ok"
            response.release()
            await client.close()
    run(test)


def test_early_hints_are_skipped_and_the_final_answer_is_returned():
    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await peer.send(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            await asyncio.sleep(0.01)
            await peer.send(answer(b"200 OK", b"final", b"x-final: yes"))

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            for _ in range(2):  # the parser is ready for the next exchange on the same connection
                response = await client.request("GET", server.target(), {})
                assert response.status == 200
                assert response.headers == {"x-final": "yes", "content-length": "5"}
                assert await response.read() == b"final"
                response.release()
            assert server.connections == 1
            await client.close()
    run(test)


# -- streamed and close-delimited bodies ------------------------------------------------------------

def test_chunked_answer_streams_its_first_chunk_before_the_rest_is_sent():
    async def test() -> None:
        rest_may_follow = asyncio.Event()

        async def script(peer: Peer) -> None:
            while await peer.read_request() is not None:
                await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                await rest_may_follow.wait()
                await peer.send(b"6;name=value\r\n world\r\n")
                await peer.send(b"1\r\n!\r\n0\r\n\r\n")

        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("POST", server.target("/v1/messages"), {}, b"{}")
            assert response.status == 200
            assert response.headers["transfer-encoding"] == "chunked"
            chunks = []
            async for chunk in response:
                chunks.append(chunk)
                rest_may_follow.set()
            assert chunks[0] == b"hello"
            assert b"".join(chunks) == b"hello world!"
            response.release()

            again = await client.request("POST", server.target("/v1/messages"), {}, b"{}")
            assert await again.read() == b"hello world!"
            again.release()
            assert server.connections == 1
            await client.close()
    run(test)


def test_body_without_length_or_chunking_ends_when_the_server_closes():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst part, ")
        await asyncio.sleep(0.01)
        await peer.send(b"second part")

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            assert response.headers == {"content-type": "text/plain"}
            assert await response.read() == b"first part, second part"
            response.release()
            assert client.idle_connections() == 0
            await client.close()
    run(test)


def test_answer_cut_short_raises_connection_broken_after_the_bytes_that_came():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(answer(b"200 OK", b"0123456789")[:-6])  # 4 of the 10 announced bytes

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            with pytest.raises(ConnectionBroken):
                await response.read()
            response.close()

            response = await client.request("GET", server.target(), {})
            received = []
            with pytest.raises(ConnectionBroken):
                async for chunk in response:
                    received.append(chunk)
            assert b"".join(received) == b"0123"
            response.close()
            await client.close()
    run(test)


def test_malformed_chunk_framing_raises_connection_broken():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
        await peer.read_request()

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            with pytest.raises(ConnectionBroken):
                await response.read()
            response.close()
            assert await saw_eof(server.peers[0])
            await client.close()
    run(test)


# -- connections that close, time out, or never open ------------------------------------------------

@pytest.mark.parametrize("wait_for_the_close", [True, False], ids=["noticed", "not-yet-noticed"])
def test_idle_connection_closed_by_the_server_is_replaced_transparently(wait_for_the_close):
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(answer(b"200 OK", b"answer %d" % peer.index))
        # returning closes the connection the client keeps idle

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            first = await client.request("GET", server.target(), {})
            assert await first.read() == b"answer 0"
            first.release()
            if wait_for_the_close:
                assert await eventually(lambda: client.idle_connections() == 0)
            second = await client.request("GET", server.target(), {})
            assert (second.status, await second.read()) == (200, b"answer 1")
            second.close()
            assert server.connections == 2
            await client.close()
    run(test)


def test_reused_connection_closed_before_any_answer_byte_is_retried_once_on_a_new_connection():
    async def script(peer: Peer) -> None:
        if peer.index == 0:
            await peer.read_request()
            await peer.send(answer(b"200 OK", b"first"))
            await peer.read_request()  # the second request is read, then dropped unanswered
            return
        while await peer.read_request() is not None:
            await peer.send(answer(b"200 OK", b"retried"))

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            first = await client.request("POST", server.target("/a"), {}, b"1")
            assert await first.read() == b"first"
            first.release()
            second = await client.request("POST", server.target("/a"), {}, b"2")
            assert (second.status, await second.read()) == (200, b"retried")
            second.release()
            assert server.connections == 2
            assert server.peers[0].requests[1] == server.peers[1].requests[0]
            assert server.peers[1].requests[0].endswith(b"\r\n\r\n2")
            await client.close()
    run(test)


def test_fresh_connection_closed_without_an_answer_raises_connection_broken_and_is_not_retried():
    async def script(peer: Peer) -> None:
        await peer.read_request()

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            with pytest.raises(ConnectionBroken):
                await client.request("POST", server.target(), {}, b"{}")
            assert server.connections == 1
            await client.close()
    run(test)


def test_bytes_on_an_idle_connection_make_it_unusable():
    # A server may send a 408 on a connection it then considers finished.
    async def test() -> None:
        released = asyncio.Event()

        async def script(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(answer(b"200 OK", b"ok %d" % peer.index))
            if peer.index == 0:
                await released.wait()
                await peer.send(answer(b"408 Request Timeout", b""))
            await peer.read_request()

        async with ScriptedServer(script) as server:
            client = Client()
            first = await client.request("GET", server.target(), {})
            assert await first.read() == b"ok 0"
            first.release()
            assert client.idle_connections() == 1
            released.set()
            assert await eventually(lambda: client.idle_connections() == 0)
            assert await saw_eof(server.peers[0])
            second = await client.request("GET", server.target(), {})
            assert (second.status, await second.read()) == (200, b"ok 1")
            second.close()
            assert server.connections == 2
            await client.close()
    run(test)


def test_a_second_answer_sent_with_the_first_makes_the_connection_unusable():
    # An upstream that answers twice is out of step with its requests: the extra answer must not be
    # taken for the next request's.
    async def test() -> None:
        async def script(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(answer(b"200 OK", b"ok %d" % peer.index) + answer(b"408 Request Timeout", b"late"))
            await peer.read_request()

        async with ScriptedServer(script) as server:
            client = Client()
            first = await client.request("GET", server.target(), {})
            assert (first.status, await first.read()) == (200, b"ok 0")
            first.release()
            second = await client.request("GET", server.target(), {})
            assert (second.status, await second.read()) == (200, b"ok 1")
            second.close()
            assert server.connections == 2
            await client.close()
    run(test)


def test_no_answer_head_within_the_first_byte_timeout_raises_timeout_and_drops_the_connection():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.read_request()  # never answers; waits for the client to go

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await client.request("GET", server.target(), {}, first_byte_timeout=0.1)
            assert 0.09 <= loop.time() - started < 0.3
            assert await saw_eof(server.peers[0])
            assert client.idle_connections() == 0
            await client.close()
    run(test)


def silent_after(first_bytes: bytes) -> Script:
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(first_bytes)
        await peer.read_request()  # silent until the client goes
    return script


def test_silence_mid_body_beyond_the_idle_timeout_raises_timeout_from_read():
    async def test() -> None:
        async with ScriptedServer(silent_after(answer(b"200 OK", b"0123456789")[:-7])) as server:
            client = Client()
            response = await client.request("GET", server.target(), {}, first_byte_timeout=0.1, idle_timeout=0.1)
            assert response.status == 200
            with pytest.raises(TimeoutError):
                await response.read()
            response.close()
            assert await saw_eof(server.peers[0])
            await client.close()
    run(test)


def test_silence_mid_stream_beyond_the_idle_timeout_raises_timeout_from_iteration():
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    async def test() -> None:
        async with ScriptedServer(silent_after(head + b"4\r\ndata\r\n")) as server:
            client = Client()
            response = await client.request("GET", server.target(), {}, first_byte_timeout=0.1, idle_timeout=0.1)
            received = []
            with pytest.raises(TimeoutError):
                async for chunk in response:
                    received.append(chunk)
            assert received == [b"data"]
            response.close()
            await client.close()
    run(test)


def test_idle_timeout_bounds_each_silence_not_the_whole_body():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for n in range(6):  # 6 gaps of 0.04 s: longer than one idle timeout in all
            await asyncio.sleep(0.04)
            await peer.send(b"1\r\n%d\r\n" % n)
        await peer.send(b"0\r\n\r\n")
        await peer.read_request()

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("GET", server.target(), {}, first_byte_timeout=0.1, idle_timeout=0.1)
            assert await response.read() == b"012345"
            response.release()
            await client.close()
    run(test)


def test_idle_timeout_shorter_than_the_first_byte_timeout_fires_on_time():
    async def test() -> None:
        async with ScriptedServer(silent_after(answer(b"200 OK", b"0123456789")[:-7])) as server:
            client = Client()
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await client.request("GET", server.target(), {}, first_byte_timeout=0.3, idle_timeout=0.05)
            with pytest.raises(TimeoutError):
                await response.read()
            response.close()
            await client.close()
            assert loop.time() - started < 0.2  # 0.05 s of silence after the head, not 0.3 s
    run(test)


def test_refused_connection_raises_connect_failed():
    async def test() -> None:
        # A bound socket that does not listen keeps the port taken, and refuses connections.
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            port = blocker.getsockname()[1]
            client = Client()
            with pytest.raises(ConnectFailed):
                await client.request("GET", Target(f"http://127.0.0.1:{port}/"), {})
            await client.close()
    run(test)


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
    b"220 smtp.example.com ESMTP ready\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
], ids=["status-code", "not-http", "content-length"])
def test_malformed_answer_head_raises_connection_broken_and_drops_the_connection(reply):
    async def test() -> None:
        async with ScriptedServer(silent_after(reply)) as server:
            client = Client()
            with pytest.raises(ConnectionBroken):
                await client.request("GET", server.target(), {})
            assert await saw_eof(server.peers[0])
            assert client.idle_connections() == 0
            await client.close()
    run(test)


# -- back-pressure ----------------------------------------------------------------------------------

def test_a_reader_that_does_not_read_stops_the_server_then_gets_every_byte():
    body = random.Random(2).randbytes(16 << 20)

    async def test() -> None:
        drained = asyncio.Event()

        async def script(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(answer(b"200 OK", body))
            drained.set()
            await peer.read_request()

        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            # Were the client to buffer all it is sent, the server's drain would finish at once.
            await asyncio.sleep(0.3)
            assert not drained.is_set()
            received = bytearray()
            async for chunk in response:
                received += chunk
            assert len(received) == len(body)
            assert received == body
            assert drained.is_set()
            response.release()
            assert client.idle_connections() == 1
            await client.close()
    run(test)


def test_read_returns_a_body_larger_than_the_back_pressure_limit():
    body = random.Random(3).randbytes(2 << 20)

    async def test() -> None:
        async with ScriptedServer(answering(answer(b"200 OK", body))) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            assert await asyncio.wait_for(response.read(), 0.3) == body
            response.release()
            await client.close()
    run(test)


def test_a_slow_reader_is_not_taken_for_a_silent_upstream():
    body = random.Random(4).randbytes(8 << 20)

    async def test() -> None:
        async with ScriptedServer(answering(answer(b"200 OK", body))) as server:
            client = Client()
            response = await client.request("GET", server.target(), {}, first_byte_timeout=0.1, idle_timeout=0.1)
            received = bytearray()
            async for chunk in response:
                if not received:
                    await asyncio.sleep(0.25)  # the reader is busy; the upstream is not silent
                received += chunk
            assert received == body
            response.release()
            await client.close()
    run(test)


# -- ending an answer -------------------------------------------------------------------------------

def test_close_mid_body_drops_the_connection_and_the_next_request_opens_a_new_one():
    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if peer.index == 0:
                await peer.send(answer(b"200 OK", b"0123456789")[:-5])
            else:
                await peer.send(answer(b"200 OK", b"fresh"))

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            assert await anext(aiter(response)) == b"01234"
            response.close()
            assert await saw_eof(server.peers[0])
            again = await client.request("GET", server.target(), {})
            assert await again.read() == b"fresh"
            again.release()
            assert server.connections == 2
            await client.close()
    run(test)


def test_release_before_the_body_ends_drops_the_connection():
    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(answer(b"200 OK", b"0123456789")[:-5] if peer.index == 0 else answer(b"200 OK", b"x"))

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            assert await anext(aiter(response)) == b"01234"
            response.release()
            assert client.idle_connections() == 0
            assert await saw_eof(server.peers[0])
            again = await client.request("GET", server.target(), {})
            assert await again.read() == b"x"
            again.release()
            assert server.connections == 2
            await client.close()
    run(test)


def test_trailers_of_one_answer_do_not_leak_into_the_next_answers_headers():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n")
        await peer.read_request()
        await peer.send(answer(b"200 OK", b"ok"))
        await peer.read_request()

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            first = await client.request("GET", server.target(), {})
            assert await first.read() == b"hello"
            first.release()
            second = await client.request("GET", server.target(), {})
            assert await second.read() == b"ok"
            second.release()
            assert server.connections == 1
            assert second.headers == {"content-length": "2"}
            await client.close()
    run(test)


# -- requests refused before sending ----------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"x-note": "a\r\nx-injected: 1"},
    {"x-note": "a\nb"},
    {"x-note\r\nx-injected": "1"},
    {"x-bad:name": "1"},
], ids=["crlf-in-value", "lf-in-value", "crlf-in-name", "colon-in-name"])
def test_header_that_would_break_the_framing_raises_value_error_before_anything_is_sent(headers):
    async def test() -> None:
        async with ScriptedServer(answering()) as server:
            client = Client()
            warm = await client.request("GET", server.target("/warm"), {})
            assert await warm.read() == JSON
            warm.release()
            with pytest.raises(ValueError):
                await client.request("POST", server.target("/x"), headers, b"{}")
            await asyncio.sleep(0.02)
            assert server.connections == 1
            assert len(server.peers[0].requests) == 1
            assert client.idle_connections() == 1  # the pooled connection is untouched and still usable
            after = await client.request("GET", server.target("/after"), {})
            assert await after.read() == JSON
            after.release()
            assert server.peers[0].requests[1].startswith(b"GET /after HTTP/1.1\r\n")
            await client.close()
    run(test)


# -- the pool ---------------------------------------------------------------------------------------

def test_client_close_closes_idle_connections_and_refuses_new_requests():
    async def test() -> None:
        async with ScriptedServer(answering()) as server:
            client = Client()
            response = await client.request("GET", server.target(), {})
            await response.read()
            response.release()
            assert client.idle_connections() == 1
            await client.close()
            assert client.idle_connections() == 0
            assert await saw_eof(server.peers[0])
            with pytest.raises(ConnectFailed):
                await client.request("GET", server.target(), {})
            assert server.connections == 1
    run(test)


def test_each_origin_has_its_own_connections():
    async def test() -> None:
        async with ScriptedServer(answering(answer(b"200 OK", b"a"))) as one, \
                ScriptedServer(answering(answer(b"200 OK", b"b"))) as two:
            client = Client()
            for _ in range(2):
                for server, expected in ((one, b"a"), (two, b"b")):
                    response = await client.request("GET", server.target(), {})
                    assert await response.read() == expected
                    response.release()
            assert (one.connections, two.connections) == (1, 1)
            assert client.idle_connections() == 2
            await client.close()
    run(test)


def test_connection_idle_longer_than_keepalive_is_not_reused():
    async def test() -> None:
        async with ScriptedServer(answering()) as server:
            client = Client(keepalive_s=0.05)
            for _ in range(2):
                response = await client.request("GET", server.target(), {})
                await response.read()
                response.release()
                await asyncio.sleep(0.15)
            assert server.connections == 2
            await client.close()
    run(test)


# -- TLS --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def self_signed(tmp_path_factory):
    """(certificate, key) files for 127.0.0.1 and localhost, made by the openssl command
    (scripts/test.sh installs it where it is missing)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def server_tls(self_signed) -> ssl.SSLContext:
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_answer_arrives_when_the_certificate_is_trusted(self_signed):
    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            await peer.send(b"6\r\nsecure\r\n")
            await peer.send(b"7\r\n stream\r\n0\r\n\r\n")

    async def test() -> None:
        async with ScriptedServer(script, ssl_context=server_tls(self_signed)) as server:
            client = Client(ssl_context=ssl.create_default_context(cafile=str(self_signed[0])))
            target = server.target("/v1/messages", scheme="https")
            for _ in range(2):
                response = await client.request("POST", target, {"x-api-key": "k"}, b"{}")
                assert response.status == 200
                assert await response.read() == b"secure stream"
                response.release()
            assert server.connections == 1
            assert server.peers[0].requests[0] == (b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
                                                   b"x-api-key: k\r\ncontent-length: 2\r\n\r\n{}" % server.port)
            await client.close()
    run(test)


def test_https_to_an_untrusted_certificate_raises_connect_failed(self_signed):
    async def test() -> None:
        async with ScriptedServer(answering(), ssl_context=server_tls(self_signed)) as server:
            client = Client()
            with pytest.raises(ConnectFailed):
                await client.request("GET", server.target("/", scheme="https"), {})
            await client.close()
            assert all(not peer.requests for peer in server.peers)
    run(test)


# -- targets ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, tls, host, port, host_header, path", [
    ("http://api.example.com/v1/messages", False, "api.example.com", 80, "api.example.com", "/v1/messages"),
    ("https://api.example.com/v1/messages", True, "api.example.com", 443, "api.example.com", "/v1/messages"),
    ("http://api.example.com:80/v1", False, "api.example.com", 80, "api.example.com", "/v1"),
    ("https://api.example.com:443/v1", True, "api.example.com", 443, "api.example.com", "/v1"),
    ("http://api.example.com:8080/v1", False, "api.example.com", 8080, "api.example.com:8080", "/v1"),
    ("https://api.example.com:80/v1", True, "api.example.com", 80, "api.example.com:80", "/v1"),
    ("http://10.0.0.7:8000/v1/chat/completions?api-version=2024-06-01", False, "10.0.0.7", 8000,
     "10.0.0.7:8000", "/v1/chat/completions?api-version=2024-06-01"),
    ("http://[::1]:8080/v1?a=1&b=2", False, "::1", 8080, "[::1]:8080", "/v1?a=1&b=2"),
    ("https://[2001:db8::1]/v1", True, "2001:db8::1", 443, "[2001:db8::1]", "/v1"),
    ("http://api.example.com", False, "api.example.com", 80, "api.example.com", "/"),
    ("http://api.example.com?x=1", False, "api.example.com", 80, "api.example.com", "/?x=1"),
    ("http://api.example.com/p?q=1#fragment", False, "api.example.com", 80, "api.example.com", "/p?q=1"),
])
def test_target_splits_a_url_once(url, tls, host, port, host_header, path):
    target = Target(url)
    assert (target.tls, target.host, target.port, target.host_header, target.target) == (
        tls, host, port, host_header, path)
    assert target.origin == (tls, host, port)


@pytest.mark.parametrize("url", ["ftp://api.example.com/v1", "ws://api.example.com/v1", "api.example.com/v1",
                                 "http:///v1/messages", ""])
def test_target_refuses_what_is_not_an_http_url(url):
    with pytest.raises(ValueError):
        Target(url)


# -- bounds: connections per origin, answer size, whole-read deadline -------------------------------

def held_until(release: asyncio.Event, reply: bytes = OK) -> Script:
    """Answers each request once `release` is set."""
    async def script(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await release.wait()
            await peer.send(reply)
    return script


def test_requests_beyond_the_origins_connection_cap_wait_and_reuse_the_connections_that_come_free():
    async def test() -> None:
        release = asyncio.Event()
        async with ScriptedServer(held_until(release)) as server:
            client = Client(max_connections_per_origin=2, pool_wait=1.0)

            async def one() -> bytes:
                response = await client.request("GET", server.target(), {})
                body = await response.read()
                response.release()
                return body

            tasks = [asyncio.ensure_future(one()) for _ in range(5)]
            assert await eventually(lambda: sum(len(p.requests) for p in server.peers) == 2)
            await asyncio.sleep(0.05)
            assert server.connections == 2 and client.open_connections() == 2
            release.set()
            assert await asyncio.gather(*tasks) == [JSON] * 5
            assert server.connections == 2
            assert sum(len(p.requests) for p in server.peers) == 5
            await client.close()
    run(test)


def test_an_origin_busy_for_longer_than_the_pool_wait_raises_pool_exhausted_without_a_new_socket():
    async def test() -> None:
        release = asyncio.Event()
        async with ScriptedServer(held_until(release)) as server:
            client = Client(max_connections_per_origin=1, pool_wait=0.1)
            held = asyncio.ensure_future(client.request("GET", server.target(), {}))
            assert await eventually(lambda: server.peers and server.peers[0].requests)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PoolExhausted) as raised:
                await client.request("GET", server.target(), {})
            assert 0.09 <= loop.time() - started < 0.3
            assert "1 connections" in str(raised.value) and isinstance(raised.value, UpstreamError)
            assert server.connections == 1
            release.set()
            response = await held
            assert await response.read() == JSON
            response.release()
            await client.close()
    run(test)


def test_a_connection_that_closes_frees_its_slot_for_the_request_waiting_for_one():
    closing = answer(b"200 OK", JSON, b"connection: close")

    async def test() -> None:
        release = asyncio.Event()
        async with ScriptedServer(held_until(release, closing)) as server:
            client = Client(max_connections_per_origin=1, pool_wait=1.0)
            first = asyncio.ensure_future(client.request("GET", server.target(), {}))
            assert await eventually(lambda: server.peers and server.peers[0].requests)
            second = asyncio.ensure_future(client.request("GET", server.target("/second"), {}))
            await asyncio.sleep(0.05)
            assert server.connections == 1
            release.set()
            for task in (first, second):
                response = await task
                assert await response.read() == JSON
                response.release()
            assert server.connections == 2
            assert server.peers[1].requests[0].startswith(b"GET /second ")
            assert client.open_connections() == 0
            await client.close()
    run(test)


def test_a_cancelled_wait_for_a_connection_takes_no_slot_with_it():
    async def test() -> None:
        release = asyncio.Event()
        async with ScriptedServer(held_until(release)) as server:
            client = Client(max_connections_per_origin=1, pool_wait=2.0)
            held = asyncio.ensure_future(client.request("GET", server.target(), {}))
            assert await eventually(lambda: server.peers and server.peers[0].requests)
            waiting = asyncio.ensure_future(client.request("GET", server.target(), {}))
            await asyncio.sleep(0.02)
            waiting.cancel()
            release.set()
            response = await held
            await response.read()
            response.release()
            assert client.open_connections() == 1 and client.idle_connections() == 1
            response = await client.request("GET", server.target(), {})
            assert await response.read() == JSON
            response.release()
            assert server.connections == 1
            await client.close()
    run(test)


def test_an_answer_declaring_more_than_the_size_limit_is_refused_before_its_body_is_read():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 209715200\r\n\r\n" + b"x" * 1000)
        await peer.read_request()

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client(max_answer_bytes=64 * 1024)
            response = await client.request("GET", server.target(), {})
            with pytest.raises(AnswerTooLarge):
                await response.read()
            response.close()
            assert await saw_eof(server.peers[0])
            await client.close()
    run(test)


def test_a_chunked_answer_growing_past_the_size_limit_is_cut_off_and_its_connection_dropped():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            for _ in range(200):  # 200 x 64 KiB = 12.5 MiB offered; the client wants at most 256 KiB
                await peer.send(b"10000\r\n" + b"x" * 65536 + b"\r\n")
        except ConnectionError:
            peer.eof.set()
            return
        await peer.send(b"0\r\n\r\n")

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client(max_answer_bytes=256 * 1024)
            response = await client.request("GET", server.target(), {})
            with pytest.raises(AnswerTooLarge):
                await response.read()
            response.close()
            assert await saw_eof(server.peers[0], timeout=1.0)
            assert client.open_connections() == 0
            await client.close()
    run(test)


def test_a_streamed_answer_is_not_capped_by_the_size_limit():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(8):
            await peer.send(b"10000\r\n" + b"x" * 65536 + b"\r\n")
        await peer.send(b"0\r\n\r\n")
        await peer.read_request()

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client(max_answer_bytes=64 * 1024)
            response = await client.request("GET", server.target(), {})
            assert sum([len(chunk) async for chunk in response]) == 8 * 65536
            response.release()
            await client.close()
    run(test)


def test_a_whole_read_past_its_timeout_raises_even_while_bytes_keep_coming_within_the_idle_timeout():
    async def script(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        try:
            for _ in range(100):
                await asyncio.sleep(0.02)
                await peer.send(b"x")
        except ConnectionError:
            peer.eof.set()

    async def test() -> None:
        async with ScriptedServer(script) as server:
            client = Client()
            loop = asyncio.get_running_loop()
            response = await client.request("GET", server.target(), {}, idle_timeout=0.2)
            started = loop.time()
            with pytest.raises(UpstreamTimeout):
                await response.read(timeout=0.3)
            assert 0.25 <= loop.time() - started < 0.6
            response.close()
            await client.close()
    run(test)


def test_every_failure_of_the_client_is_an_upstream_error():
    async def silent(peer: Peer) -> None:
        await peer.read_request()
        await peer.read_request()

    async def test() -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        client = Client()
        with pytest.raises(UpstreamError):
            await client.request("GET", Target(f"http://127.0.0.1:{port}/"), {})
        async with ScriptedServer(silent) as server:
            with pytest.raises(UpstreamError) as raised:
                await client.request("GET", server.target(), {}, first_byte_timeout=0.05)
            assert isinstance(raised.value, UpstreamTimeout) and isinstance(raised.value, TimeoutError)
        await client.close()
    run(test)
