"""The HTTP/1.1 client the gateway calls providers with: pooled keep-alive connections on asyncio
protocols, responses parsed by httptools (llhttp, the parser uvicorn uses for the inbound side).

Every request a client sends crosses this module once, so it does only what an upstream call
needs: one request at a time per connection, the request written in one piece, the answer read
whole or chunk by chunk as it arrives (chunked framing and TLS included), a first-byte and an idle
timeout kept by a single timer per request, back-pressure towards a slow reader, and one transparent
retry when a reused connection turns out to have been closed by the upstream before it answered.
The README has the measurements that made it replace aiohttp on this path.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

# Above this many unread bytes the connection stops reading until the reader catches up: a slow
# client throttles its upstream instead of filling the gateway's memory.
_HIGH_WATER = 1 << 20
_IDLE_PER_ORIGIN = 512


class UpstreamError(Exception):
    """The upstream could not be reached, or its answer broke off or could not be parsed."""


class ConnectFailed(UpstreamError):
    """No connection could be opened (refused, unresolvable, TLS handshake failed)."""


class ConnectionBroken(UpstreamError):
    """The connection failed after the request was sent: closed, reset, or a malformed answer."""


class _Stale(Exception):
    """A reused connection was closed before any answer arrived: the request never got processed."""


class Target:
    """One upstream URL, split once: parsing a URL costs every request microseconds."""

    __slots__ = ("origin", "host", "port", "tls", "host_header", "target")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.origin = (self.tls, self.host, self.port)
        default_port = self.port == (443 if self.tls else 80)
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if default_port else f"{name}:{self.port}"
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def __repr__(self) -> str:
        return f"Target({'https' if self.tls else 'http'}://{self.host_header}{self.target})"


def encode_head(method: str, target: Target, headers: Mapping[str, str], body_length: int) -> bytes:
    """The request line and headers; a header that would break the framing is refused."""
    lines = [f"{method} {target.target} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or a colon")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"content-length: {body_length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


class Response:
    """An upstream answer: status and headers as soon as they arrive, the body as it comes.

    `headers` maps lower-case names to values (repeated headers joined with ", "). The body is read
    once, either whole (`read`) or chunk by chunk (`async for`); then `release` hands the connection
    back for reuse, or `close` drops it (always safe, e.g. on cancellation)."""

    __slots__ = ("status", "headers", "_conn", "_chunks", "_buffered", "_complete", "_error", "_waiter",
                 "_released", "_whole")

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._released = False
        self._whole = False  # read whole: the caller wants every byte anyway, so no back-pressure

    # -- fed by the connection --------------------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _HIGH_WATER and not self._whole:
            self._conn.pause()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if self._complete or self._error is not None:
            return
        if error is None:
            self._complete = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        self._conn.resume()
        return data

    # -- for the reader ---------------------------------------------------------------------------
    async def read(self) -> bytes:
        self._whole = True
        self._conn.resume()
        while not self._complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._take() if self._chunks else b""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                yield self._take()
            elif self._complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    @property
    def exhausted(self) -> bool:
        """Every byte of the body has arrived and been taken."""
        return self._complete and not self._chunks

    def release(self) -> None:
        """Done with the answer: a fully read connection goes back to the pool, any other closes."""
        if self._released:
            return
        self._released = True
        self._conn.done(reusable=self.exhausted)

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._conn.done(reusable=False)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parses answers and feeds them to the current Response."""

    def __init__(self, client: Client, origin: tuple) -> None:
        self.client = client
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.pooled = False
        self._paused = False
        # Per exchange:
        self._head_waiter: asyncio.Future | None = None
        self._response: Response | None = None
        self._headers: dict[str, str] = {}
        self._received = False
        self._informational = False
        self._in_body = False
        self._framed = True
        self._keep_alive = False
        self._idle_timeout: float | None = None
        self._expires_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._head_waiter is None and self._response is None:
            self.abort()  # bytes on an idle connection (a 408 before closing, say): not reusable
            return
        self._received = True
        if self._response is not None and self._idle_timeout is not None:
            self._expires_at = self.loop.time() + self._idle_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionBroken(f"malformed answer: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.client._forget(self)
        if self._response is not None and not self._framed and exc is None:
            self._response._finish()  # a body delimited by the end of the connection
            return
        if self._head_waiter is not None and not self._received and self.reused:
            self._fail(_Stale())
        else:
            self._fail(ConnectionBroken("the upstream closed the connection" if exc is None
                                        else f"the connection failed: {type(exc).__name__}"))

    def pause_writing(self) -> None:  # the request body is written in one piece; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._response is not None:
            # Bytes after a complete answer: the upstream is not speaking HTTP/1.1 as expected.
            raise ConnectionBroken("the upstream sent more than one answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return  # trailers of a chunked body: not part of the head the reader already has
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._informational = True  # 100 Continue, 103 Early Hints: the real answer follows
            self._headers = {}
            return
        headers = self._headers
        self._headers = {}
        self._in_body = True
        self._framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "") \
            or status in (204, 304)
        response = self._response = Response(self, status, headers)
        if self._idle_timeout is not None:
            self._arm(self.loop.time() + self._idle_timeout)
        else:
            self._expires_at = None
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._keep_alive = self.parser.should_keep_alive()
        self._cancel_timer()
        if self._response is not None:
            self._response._finish()

    # -- exchange ---------------------------------------------------------------------------------
    async def exchange(self, head: bytes, body: bytes, first_byte_timeout: float,
                       idle_timeout: float | None) -> Response:
        self._head_waiter = waiter = self.loop.create_future()
        self._response = None
        self._received = False
        self._in_body = False
        self._keep_alive = False
        self._idle_timeout = idle_timeout
        self._arm(self.loop.time() + first_byte_timeout)
        transport = self.transport
        if body and len(body) > 16384:
            transport.writelines((head, body))
        else:
            transport.write(head + body)
        try:
            return await waiter
        except BaseException:
            self._head_waiter = None
            self.abort()
            raise

    def done(self, reusable: bool) -> None:
        self._response = None
        self._cancel_timer()
        if reusable and self._keep_alive and not self.closed and not self._paused:
            self.client._put_back(self)
        else:
            self.abort()

    # -- flow control and timeouts ----------------------------------------------------------------
    def pause(self) -> None:
        if not self._paused and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and not self.closed:
            self._paused = False
            self.transport.resume_reading()
            if self._idle_timeout is not None and self._expires_at is not None:
                self._expires_at = self.loop.time() + self._idle_timeout  # the wait was ours, not the upstream's

    def _arm(self, at: float) -> None:
        """Expire at `at`: moving the deadline later costs nothing (the timer re-arms when it fires),
        moving it earlier reschedules the timer."""
        self._expires_at = at
        timer = self._timer
        if timer is None or at < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(at, self._on_timer)

    def _cancel_timer(self) -> None:
        self._expires_at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        expires = self._expires_at
        if expires is None:
            return
        now = self.loop.time()
        if now < expires or self._paused:
            # While reading is paused the silence is the slow reader's, not the upstream's.
            self._timer = self.loop.call_at(max(expires, now + (self._idle_timeout or 0.0)), self._on_timer)
            return
        what = "answer" if self._response is None else "next bytes of its answer"
        self._fail(TimeoutError(f"the upstream sent no {what} in time"))
        self.abort()

    def _fail(self, error: BaseException) -> None:
        waiter = self._head_waiter
        if waiter is not None:
            self._head_waiter = None
            if not waiter.done():
                waiter.set_exception(error)
        elif self._response is not None:
            self._response._finish(error)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            if self.transport is not None:
                self.transport.abort()
            self.client._forget(self)


class Client:
    """Pools of idle keep-alive connections, one per origin (scheme, host, port)."""

    def __init__(self, *, connect_timeout: float = 10.0, keepalive_s: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._idle: dict[tuple, collections.deque[_Connection]] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # The system's trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured by OpenSSL).
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl

    async def request(self, method: str, target: Target, headers: Mapping[str, str], body: bytes = b"", *,
                      first_byte_timeout: float = 300.0, idle_timeout: float | None = None) -> Response:
        """Send one request; return once the answer's status and headers have arrived.

        `first_byte_timeout` bounds connecting and waiting for the answer's head (TimeoutError);
        `idle_timeout` bounds each wait for the body's next bytes. Raises ConnectFailed when no
        connection opens and ConnectionBroken when it fails before the head arrives."""
        head = encode_head(method, target, headers, len(body))
        deadline = time.monotonic() + first_byte_timeout
        conn = self._take_idle(target.origin)
        while True:
            if conn is None:
                conn = await self._connect(target, deadline)
            try:
                return await conn.exchange(head, body, max(0.0, deadline - time.monotonic()), idle_timeout)
            except _Stale:
                conn = self._take_idle(target.origin)

    async def _connect(self, target: Target, deadline: float) -> _Connection:
        if self._closed:
            raise ConnectFailed("the client is closed")
        loop = asyncio.get_running_loop()
        conn = _Connection(self, target.origin)
        wait = min(self.connect_timeout, max(0.0, deadline - time.monotonic()))
        try:
            async with asyncio.timeout(wait):
                if target.tls:
                    await loop.create_connection(lambda: conn, target.host, target.port, ssl=self._ssl_context(),
                                                 server_hostname=target.host)
                else:
                    await loop.create_connection(lambda: conn, target.host, target.port)
        except TimeoutError:
            raise TimeoutError(f"connecting to {target.host_header} took longer than {wait:g} s") from None
        except OSError as exc:  # refused, unresolvable, TLS failures (ssl.SSLError is an OSError)
            raise ConnectFailed(f"could not connect to {target.host_header}: {exc}") from None
        return conn

    def _take_idle(self, origin: tuple) -> _Connection | None:
        pool = self._idle.get(origin)
        if not pool:
            return None
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            conn.pooled = False
            if conn.closed:
                continue
            if now - conn.idle_since > self.keepalive_s:
                conn.abort()  # the upstream may be closing it right now; the rest of the pool is older
                _drop_all(pool)
                return None
            conn.reused = True
            return conn
        return None

    def _put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.abort()
            return
        now = time.monotonic()
        conn.idle_since = now
        pool = self._idle.get(conn.origin)
        if pool is None:
            pool = self._idle[conn.origin] = collections.deque()
        pool.append(conn)
        conn.pooled = True
        # The least recently used sit on the left: past their keep-alive, or beyond the cap, they go.
        while pool and (len(pool) > _IDLE_PER_ORIGIN or now - pool[0].idle_since > self.keepalive_s):
            oldest = pool.popleft()
            oldest.pooled = False
            oldest.abort()

    def _forget(self, conn: _Connection) -> None:
        """An idle connection the upstream closed leaves the pool at once."""
        if not conn.pooled:
            return
        conn.pooled = False
        pool = self._idle.get(conn.origin)
        if pool:
            try:
                pool.remove(conn)
            except ValueError:
                pass

    def idle_connections(self) -> int:
        return sum(len(pool) for pool in self._idle.values())

    async def close(self) -> None:
        self._closed = True
        for pool in self._idle.values():
            _drop_all(pool)
        self._idle.clear()


def _drop_all(pool: collections.deque[_Connection]) -> None:
    while pool:
        conn = pool.pop()
        conn.pooled = False
        conn.abort()
