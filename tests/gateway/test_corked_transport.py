"""The inbound connection's write gathering (gateway/http_guard.CorkedTransport), over a real socket
pair and event loop: what is written in one turn arrives whole and in order, and closing, shutting
the write side or aborting treats what still waits as a client would expect."""
from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.http_guard import CorkedTransport


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def _corked() -> tuple[CorkedTransport, socket.socket, _Sink]:
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_connection(_Sink, sock=ours)
    peer.setblocking(False)
    return CorkedTransport(transport, loop), peer, sink


async def _read_until_eof(peer: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while chunk := await asyncio.wait_for(loop.sock_recv(peer, 65536), 5):
        data += chunk
    return data


def _run(coro):
    return asyncio.run(coro)


def test_writes_of_one_turn_leave_together_in_order_and_nothing_leaves_before_the_turn_ends():
    async def scenario():
        corked, peer, _ = await _corked()
        corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        corked.write(b"hello")
        with pytest.raises(BlockingIOError):
            peer.recv(1024)  # still gathered: nothing was written during the turn
        assert corked.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert peer.recv(1024) == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        corked.write(b"next")
        await asyncio.sleep(0.01)
        assert peer.recv(1024) == b"next"
        corked.close()
        peer.close()
    _run(scenario())


def test_close_writes_what_waits_before_the_connection_ends():
    async def scenario():
        corked, peer, sink = await _corked()
        corked.write(b"head ")
        corked.write(b"body")
        corked.close()
        assert await _read_until_eof(peer) == b"head body"
        await asyncio.wait_for(sink.lost, 5)
        peer.close()
    _run(scenario())


def test_write_eof_writes_what_waits_first():
    async def scenario():
        corked, peer, _ = await _corked()
        corked.write(b"refusal")
        assert corked.can_write_eof()
        corked.write_eof()
        assert await _read_until_eof(peer) == b"refusal"
        corked.close()
        peer.close()
    _run(scenario())


def test_abort_drops_what_waits():
    async def scenario():
        corked, peer, sink = await _corked()
        corked.write(b"never sent")
        corked.abort()
        await asyncio.wait_for(sink.lost, 5)
        await asyncio.sleep(0.01)
        assert await _read_until_eof(peer) == b""
        peer.close()
    _run(scenario())


def test_a_write_to_a_closing_transport_is_dropped_without_error():
    async def scenario():
        corked, peer, sink = await _corked()
        corked.write(b"late")
        corked._transport.close()  # the connection is closing meanwhile
        await asyncio.sleep(0.01)
        await asyncio.wait_for(sink.lost, 5)
        assert corked.is_closing()
        peer.close()
    _run(scenario())
