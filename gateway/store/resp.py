"""A small pipelining Redis client for the calls on every request's path (admission, settlement).

redis-py spends tens of microseconds of Python per command (pool checkout, retry wrapper, generic
encoding) and uses a connection per command in flight. Here one connection carries every command:
each is written as soon as it is issued, concurrent requests' commands share the socket (natural
pipelining), and replies, parsed by hiredis, resolve futures in order. Only plain `redis://`
URLs; TLS and Cluster go through redis-py.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


class RespError(Exception):
    """An error reply from Redis (e.g. NOSCRIPT)."""


class SetupFailed(ConnectionError):
    """The connection could not be opened and prepared (AUTH, SELECT); nothing was sent on it."""


def encode_command(args: Sequence[Any]) -> bytes:
    """One command in RESP; hiredis packs str, bytes, int and float in C, four times faster."""
    try:
        return hiredis.pack_command(args if type(args) is tuple else tuple(args))
    except TypeError:
        return _encode_any(args)


def encode_arguments(args: Sequence[Any]) -> bytes:
    """Arguments in RESP without the count that heads a command: a segment of a command encoded
    in parts (`join_command`), so that arguments which stay the same from call to call are
    encoded once."""
    packed = encode_command(args)
    return packed[packed.index(b"\r\n") + 2:]


def join_command(count: int, segments: Sequence[bytes]) -> bytes:
    """The command of `count` arguments that `segments` (each from `encode_arguments`) hold."""
    return b"*%d\r\n" % count + b"".join(segments)


def _encode_any(args: Sequence[Any]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            data = b"1" if arg else b"0"
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _ReplyCallback:
    """A waiter that hands its reply to a function at once, where a future would wake its task on
    the event loop's next turn: the one a batch of commands needs costs no turn of its own. It
    answers what the protocol asks of a waiter (`done`, `set_result`, `set_exception`)."""
    __slots__ = ("on_reply", "answered")

    def __init__(self, on_reply: Callable[[Any, Exception | None], None]) -> None:
        self.on_reply = on_reply
        self.answered = False

    def done(self) -> bool:
        return self.answered

    def set_result(self, reply: Any) -> None:
        self._answer(reply, None)

    def set_exception(self, error: Exception) -> None:
        self._answer(None, error)

    def _answer(self, reply: Any, error: Exception | None) -> None:
        self.answered = True
        try:
            self.on_reply(reply, error)
        except Exception as exc:  # a fault of the caller's must not stop the replies behind this one
            asyncio.get_running_loop().call_exception_handler(
                {"message": "a reply callback failed", "exception": exc})


class _Protocol(asyncio.Protocol):
    """One connection; replies are matched to waiters in order.

    Replies come in order, so when the oldest waiter has waited longer than `timeout` the whole
    connection is stuck: a watchdog then fails every waiter with TimeoutError and drops the
    connection. One timer per connection, not one per command."""

    def __init__(self, timeout: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self.waiters: deque[asyncio.Future] = deque()
        self.sent_at: deque[float] = deque()
        self.lost: Exception | None = None
        self.timeout = timeout
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._watchdog = self._loop.call_later(self._check_every(), self._check)

    def _check_every(self) -> float:
        return min(0.1, self.timeout / 4)

    def _check(self) -> None:
        if self.lost is not None:
            return
        if self.sent_at and self._loop.time() - self.sent_at[0] > self.timeout:
            self._give_up(TimeoutError(f"redis did not answer within {self.timeout:g} s"))
            return
        self._watchdog = self._loop.call_later(self._check_every(), self._check)

    def expect(self, waiter: asyncio.Future) -> None:
        self.waiters.append(waiter)
        self.sent_at.append(self._loop.time())

    def _give_up(self, error: Exception) -> None:
        self.lost = error
        if self.transport is not None:
            self.transport.abort()
        self._fail_all(error)

    def close(self, error: Exception) -> None:
        """Drop the connection for good: transport, watchdog and any waiter."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.lost is None:
            self._give_up(error)

    def write(self, data: bytes) -> None:
        """Queue a command; everything queued in one turn of the event loop leaves in one write,
        so concurrent requests share a system call as well as the connection."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            waiter = self.waiters.popleft()
            self.sent_at.popleft()
            if waiter.done():  # its caller was cancelled; the reply still had to be consumed
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RespError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.lost is None:
            self.lost = exc or ConnectionError("connection closed by server")
            self._fail_all(ConnectionError(f"redis connection lost: {self.lost}"))

    def _fail_all(self, error: Exception) -> None:
        self.sent_at.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)


class PipelinedRedis:
    def __init__(self, url: str, *, connect_timeout: float, operation_timeout: float = 1.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.db = int(parts.path.lstrip("/") or 0) if parts.path not in ("", "/") else 0
        self.connect_timeout = connect_timeout
        self.operation_timeout = operation_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            loop = asyncio.get_running_loop()
            protocol = None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, protocol = await loop.create_connection(lambda: _Protocol(self.operation_timeout),
                                                               self.host, self.port)
                    if self.password:
                        auth = [self.username, self.password] if self.username else [self.password]
                        await self._send(protocol, [b"AUTH", *auth])
                    if self.db:
                        await self._send(protocol, [b"SELECT", self.db])
            except BaseException as exc:
                # A connection that could not be set up (refused, slow, an error reply to AUTH or
                # SELECT, or a caller cancelled meanwhile) is closed with its watchdog; to callers
                # a failed setup reads as an unreachable store.
                if protocol is not None:
                    protocol.close(ConnectionError(f"redis connection setup failed: {exc!r}"))
                if isinstance(exc, (RespError, OSError, TimeoutError)):
                    raise SetupFailed(f"redis connection setup failed: {type(exc).__name__}: {exc}") from exc
                raise
            self._protocol = protocol
            return protocol

    @staticmethod
    def _send(protocol: _Protocol, args: Sequence[Any]) -> asyncio.Future:
        return PipelinedRedis._send_encoded(protocol, encode_command(args))

    @staticmethod
    def _send_encoded(protocol: _Protocol, command: bytes) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        protocol.expect(waiter)
        protocol.write(command)
        return waiter

    async def execute(self, *args: Any) -> Any:
        protocol = await self._connection()
        return await self._send(protocol, args)

    async def execute_encoded(self, command: bytes) -> Any:
        """`execute` of a command already in RESP (`join_command`)."""
        protocol = await self._connection()
        return await self._send_encoded(protocol, command)

    def send_encoded_now(self, command: bytes, on_reply: Callable[[Any, Exception | None], None]) -> bool:
        """`execute_encoded` without a coroutine or a future: `on_reply(reply, None)`, or
        `on_reply(None, error)` for an error reply or a failed connection, is called as soon as
        the reply is read. False (nothing sent) when the connection is not open: `execute_encoded`
        opens it."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            return False
        protocol.expect(_ReplyCallback(on_reply))  # type: ignore[arg-type]  (a waiter, as a future is)
        protocol.write(command)
        return True

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Every command in one write; the replies in order (an error reply is returned, not raised)."""
        protocol = await self._connection()
        loop = asyncio.get_running_loop()
        waiters = []
        for _ in commands:
            waiter = loop.create_future()
            protocol.expect(waiter)
            waiters.append(waiter)
        protocol.write(b"".join(encode_command(c) for c in commands))
        return list(await asyncio.gather(*waiters, return_exceptions=True))

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
