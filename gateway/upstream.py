"""The HTTP/1.1 client the gateway calls providers with: pooled keep-alive connections on asyncio
protocols, responses parsed by httptools (llhttp, the parser uvicorn uses for the inbound side).

Every request a client sends crosses this module once, so it does only what an upstream call
needs: one request at a time per connection, the request written in one piece, the answer read
whole or chunk by chunk as it arrives (chunked framing and TLS included), a first-byte and an idle
timeout kept by a single timer per request, back-pressure towards a slow reader, and one transparent
retry when a reused connection turns out to have been closed by the upstream before it answered.
What it holds is bounded: at most `max_connections_per_origin` connections per origin (a request
beyond them waits up to `pool_wait` seconds for one to come free), an answer read whole at most
`max_answer_bytes`, and a whole read may be given a deadline of its own.
Every failure leaves it as an `UpstreamError`: callers catch one hierarchy.
The README has the measurements that made it replace aiohttp on this path.

Egress (`gateway.egress`): each Target is given its route once, the first time the client sees it
(and again only after `configure` changed the egress plan): directly, or through an HTTP proxy
(a CONNECT tunnel for https, the request in absolute form for http), with the provider's own TLS
context or the default one. Pools are per route: per origin and per proxy and TLS context, so a
connection is only ever reused the way it was opened.
"""
from __future__ import annotations

import asyncio
import collections
import math
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

from gateway.egress import EgressPlan, Proxy

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


class UpstreamTimeout(UpstreamError, TimeoutError):
    """No answer, or no next bytes of it, in time; or an answer read whole outlived its deadline."""


class PoolExhausted(UpstreamError):
    """Every connection the origin may have was busy, and none came free within the pool wait."""


class AnswerTooLarge(UpstreamError):
    """An answer read whole was longer than the limit."""


class ProxyFailed(ConnectFailed):
    """The egress proxy could not be reached, or refused the request. The message names the proxy
    (never its credentials) and is fit to show a client."""


class _Stale(Exception):
    """A reused connection was closed before any answer arrived: the request never got processed."""


class Target:
    """One upstream URL, split once: parsing a URL costs every request microseconds."""

    __slots__ = ("origin", "host", "port", "tls", "host_header", "target", "route", "route_generation")

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
        self.route: _Route | None = None  # set by the client that sends to it, once
        self.route_generation = -1

    def __repr__(self) -> str:
        return f"Target({'https' if self.tls else 'http'}://{self.host_header}{self.target})"


class _Route:
    """How a Target is reached: the pool it draws from, the proxy and TLS context connections use,
    and what an http request through a proxy adds to its head (absolute form, proxy credentials)."""

    __slots__ = ("key", "proxy", "ssl", "request_target", "head_extra")

    def __init__(self, target: Target, proxy: Proxy | None, context: ssl.SSLContext | None) -> None:
        self.proxy = proxy
        self.ssl = context
        self.key = (target.origin, proxy, id(context) if context is not None else None)
        self.request_target = target.target
        self.head_extra = ""
        if proxy is not None and not target.tls:
            self.request_target = f"http://{target.host_header}{target.target}"
            if proxy.authorization:
                self.head_extra = f"proxy-authorization: {proxy.authorization}\r\n"


def encode_head(method: str, target: Target, headers: Mapping[str, str], body_length: int,
                route: _Route | None = None) -> bytes:
    """The request line and headers; a header that would break the framing is refused."""
    if route is None:
        lines = [f"{method} {target.target} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
    else:
        lines = [f"{method} {route.request_target} HTTP/1.1\r\nhost: {target.host_header}\r\n{route.head_extra}"]
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
                 "_released", "_whole", "_high_water")

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
        # Streamed: buffered bytes above which reading pauses. Read whole: the answer's size limit.
        self._high_water: float = _HIGH_WATER

    # -- fed by the connection --------------------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > self._high_water:
            if self._whole:
                self._too_large()
                return
            self._conn.pause()
        self._wake()

    def _too_large(self) -> AnswerTooLarge:
        """Drop what came and, unless it all came, the connection: the rest is not worth reading."""
        error = AnswerTooLarge(f"the answer is longer than the limit of {int(self._high_water)} bytes")
        self._chunks = []
        self._buffered = 0
        if not self._complete:
            self._finish(error)
            self._conn.abort()
        return error

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
    async def read(self, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
        """The whole body. Longer than `max_bytes` (default: the client's `max_answer_bytes`):
        AnswerTooLarge, without reading the rest. Not complete within `timeout` seconds:
        UpstreamTimeout, whatever the idle timeout."""
        limit = self._conn.client.max_answer_bytes if max_bytes is None else max_bytes
        self._high_water = math.inf if limit is None else limit
        self._whole = True
        if limit is not None and self._error is None:
            declared = self.headers.get("content-length", "")
            if self._buffered > limit or (declared.isdigit() and int(declared) > limit):
                raise self._too_large()
        if timeout is not None and not self._complete:
            self._conn.deadline_in(timeout)
        self._conn.resume()
        while not self._complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._take() if self._chunks else b""

    # The body's chunks as they come. An iterator of its own rather than an async generator: the
    # event loop tracks every async generator it starts (a weak set, a finalizer), once per stream.
    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                return self._take()
            if self._complete:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
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
        self.counted = False  # holds one of its origin's connection slots until it closes
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
        self._deadline: float | None = None  # the whole body's, when the reader set one
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
        if self.closed or self.transport is None or self.transport.is_closing():
            self.abort()
            raise _Stale() if self.reused else ConnectionBroken("the connection closed before the request went out")
        self._head_waiter = waiter = self.loop.create_future()
        self._response = None
        self._received = False
        self._in_body = False
        self._keep_alive = False
        self._idle_timeout = idle_timeout
        self._deadline = None
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

    def deadline_in(self, seconds: float) -> None:
        """The answer must be complete within `seconds`, however steadily its bytes arrive."""
        at = self._deadline = self.loop.time() + max(0.0, seconds)
        timer = self._timer
        if timer is None or at < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(at, self._on_timer)

    def _cancel_timer(self) -> None:
        self._expires_at = None
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            self._fail(UpstreamTimeout("the upstream's answer did not complete within the request's deadline"))
            self.abort()
            return
        expires = self._expires_at
        if expires is None:
            if deadline is not None:
                self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        if now < expires or self._paused:
            # While reading is paused the silence is the slow reader's, not the upstream's.
            at = max(expires, now + (self._idle_timeout or 0.0))
            self._timer = self.loop.call_at(at if deadline is None else min(at, deadline), self._on_timer)
            return
        what = "answer" if self._response is None else "next bytes of its answer"
        self._fail(UpstreamTimeout(f"the upstream sent no {what} in time"))
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


class _Pool:
    """One origin's connections: the idle ones, how many are open in all (idle, busy or being
    opened), and the requests waiting for one, oldest first."""

    __slots__ = ("idle", "open", "waiters")

    def __init__(self) -> None:
        self.idle: collections.deque[_Connection] = collections.deque()
        self.open = 0
        # Each resolves to a connection handed over, or to None: a slot to open one in.
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    def next_waiter(self) -> asyncio.Future | None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # gone: its wait expired or its request was cancelled
                return waiter
        return None


class Client:
    """Pools of keep-alive connections, one per origin (scheme, host, port), each capped."""

    def __init__(self, *, connect_timeout: float = 10.0, keepalive_s: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None, max_connections_per_origin: int = 512,
                 pool_wait: float = 5.0, max_answer_bytes: int | None = None,
                 egress: EgressPlan | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self.max_connections_per_origin = max_connections_per_origin
        self.pool_wait = pool_wait
        self.max_answer_bytes = max_answer_bytes
        self._ssl = ssl_context
        self._pools: dict[tuple, _Pool] = {}
        self._closed = False
        self._egress = egress or EgressPlan()
        self._generation = 0

    def configure(self, egress: EgressPlan) -> None:
        """A new egress plan (a config reload): every Target takes its route again on its next
        request; connections opened the old way stay in their own pools until they age out."""
        self._egress = egress
        self._generation += 1

    def _route(self, target: Target) -> _Route:
        proxy, context = self._egress.route(target.tls, target.host, target.port)
        route = _Route(target, proxy, context)
        target.route, target.route_generation = route, self._generation
        return route

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

        `first_byte_timeout` bounds waiting for a free connection, connecting and waiting for the
        answer's head (UpstreamTimeout); `idle_timeout` bounds each wait for the body's next bytes.
        Raises PoolExhausted when the origin's connections stay busy for `pool_wait`, ConnectFailed
        when no connection opens, ConnectionBroken when it fails before the head arrives."""
        route = target.route
        if route is None or target.route_generation != self._generation:
            route = self._route(target)
        head = encode_head(method, target, headers, len(body), route)
        deadline = time.monotonic() + first_byte_timeout
        pool = self._pools.get(route.key)
        conn = self._take_idle(pool) if pool is not None else None  # the usual case, without a wait
        while True:
            if conn is None:
                conn = await self._acquire(target, route, deadline)
            try:
                response = await conn.exchange(head, body, max(0.0, deadline - time.monotonic()), idle_timeout)
                if response.status == 407 and route.proxy is not None and not target.tls:
                    response.close()
                    raise ProxyFailed(f"proxy {route.proxy.shown} refused the request to {target.host_header}: "
                                      f"407 Proxy Authentication Required")
                return response
            except _Stale:
                conn = None
            except UpstreamError:
                raise
            except OSError as exc:  # a write on a socket that just failed
                conn.abort()
                raise ConnectionBroken(f"the connection failed: {type(exc).__name__}") from None

    def _pool(self, origin: tuple) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        return pool

    async def _acquire(self, target: Target, route: _Route, deadline: float) -> _Connection:
        """An idle connection, else a new one within the origin's cap, else the first to come free."""
        if self._closed:
            raise ConnectFailed("the client is closed")
        pool = self._pool(route.key)
        conn = self._take_idle(pool)
        if conn is not None:
            return conn
        if pool.open < self.max_connections_per_origin and not pool.waiters:
            pool.open += 1
            return await self._connect(target, route, deadline)
        handed = await self._wait(pool, target, deadline)
        return handed if handed is not None else await self._connect(target, route, deadline)

    async def _wait(self, pool: _Pool, target: Target, deadline: float) -> _Connection | None:
        loop = asyncio.get_running_loop()
        wait = min(self.pool_wait, max(0.0, deadline - time.monotonic()))
        waiter = loop.create_future()
        pool.waiters.append(waiter)
        timer = loop.call_later(wait, _expire, waiter)
        try:
            return await waiter
        except PoolExhausted:
            raise PoolExhausted(f"all {self.max_connections_per_origin} connections to {target.host_header} "
                                f"stayed busy for {wait:g} s") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_back(pool, waiter.result())  # handed over just as the request was cancelled
            raise
        finally:
            timer.cancel()

    def _hand_back(self, pool: _Pool, handed: _Connection | None) -> None:
        if handed is None:
            pool.open -= 1
            self._give_slot(pool)
        else:
            self._put_back(handed)

    def _give_slot(self, pool: _Pool) -> None:
        """A connection closed: the oldest waiter may open one instead."""
        waiter = pool.next_waiter()
        if waiter is not None:
            pool.open += 1
            waiter.set_result(None)

    async def _connect(self, target: Target, route: _Route, deadline: float) -> _Connection:
        """Open a connection in a slot already counted in the route's `open`."""
        loop = asyncio.get_running_loop()
        conn = _Connection(self, route.key)
        conn.counted = True
        wait = min(self.connect_timeout, max(0.0, deadline - time.monotonic()))
        proxy = route.proxy
        try:
            async with asyncio.timeout(wait):
                if proxy is not None:
                    await self._connect_through(proxy, target, route, conn)
                elif target.tls:
                    await loop.create_connection(lambda: conn, target.host, target.port,
                                                 ssl=route.ssl or self._ssl_context(), server_hostname=target.host)
                else:
                    await loop.create_connection(lambda: conn, target.host, target.port)
        except BaseException as exc:
            self._release(conn)
            if isinstance(exc, TimeoutError):
                through = f" through proxy {proxy.shown}" if proxy is not None else ""
                raise UpstreamTimeout(f"connecting to {target.host_header}{through} took longer than "
                                      f"{wait:g} s") from None
            if isinstance(exc, OSError):  # refused, unresolvable, TLS failures (ssl.SSLError is an OSError)
                raise ConnectFailed(f"could not connect to {target.host_header}: {exc}") from None
            raise
        if self._closed:
            conn.abort()
            raise ConnectFailed("the client is closed")
        return conn

    async def _connect_through(self, proxy: Proxy, target: Target, route: _Route, conn: _Connection) -> None:
        """A connection to the proxy: the request goes in absolute form for http; for https, a CONNECT
        tunnel first, then TLS with the upstream inside it."""
        loop = asyncio.get_running_loop()
        try:
            if not target.tls:
                await loop.create_connection(lambda: conn, proxy.host, proxy.port)
                return
            transport, tunnel = await loop.create_connection(_Tunnel, proxy.host, proxy.port)
        except OSError as exc:
            raise ProxyFailed(f"could not connect to proxy {proxy.shown}: {exc.strerror or exc}") from None
        try:
            authority = target.host_header if target.port != 443 else f"{target.host_header}:443"
            credentials = f"proxy-authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
            transport.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n{credentials}\r\n"
                            .encode("latin-1"))
            status, reason = await tunnel.answer
            if status != 200:
                raise ProxyFailed(f"proxy {proxy.shown} refused the tunnel to {authority}: {status} {reason}".rstrip())
            tls = await loop.start_tls(transport, conn, route.ssl or self._ssl_context(),
                                       server_hostname=target.host)
        except BaseException:
            transport.abort()
            raise
        conn.connection_made(tls)

    def _take_idle(self, pool: _Pool) -> _Connection | None:
        idle = pool.idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if conn.closed:
                continue
            if now - conn.idle_since > self.keepalive_s:
                conn.abort()  # the upstream may be closing it right now; the rest of the pool is older
                _drop_all(idle)
                return None
            conn.reused = True
            return conn
        return None

    def _put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.abort()
            return
        pool = self._pool(conn.origin)
        waiter = pool.next_waiter() if pool.waiters else None
        if waiter is not None:
            conn.reused = True
            waiter.set_result(conn)  # straight to the oldest waiting request, never idle in between
            return
        now = time.monotonic()
        conn.idle_since = now
        idle = pool.idle
        idle.append(conn)
        conn.pooled = True
        # The least recently used sit on the left: past their keep-alive, or beyond the cap, they go.
        while idle and (len(idle) > _IDLE_PER_ORIGIN or now - idle[0].idle_since > self.keepalive_s):
            oldest = idle.popleft()
            oldest.pooled = False
            oldest.abort()

    def _forget(self, conn: _Connection) -> None:
        """A closed connection leaves the idle pool at once and frees its slot."""
        pool = self._pools.get(conn.origin)
        if pool is None:
            return
        if conn.pooled:
            conn.pooled = False
            try:
                pool.idle.remove(conn)
            except ValueError:
                pass
        self._release(conn)

    def _release(self, conn: _Connection) -> None:
        if conn.counted:
            conn.counted = False
            pool = self._pool(conn.origin)
            pool.open -= 1
            self._give_slot(pool)

    def idle_connections(self) -> int:
        return sum(len(pool.idle) for pool in self._pools.values())

    def open_connections(self) -> int:
        """Idle, busy and being opened, over every origin."""
        return sum(pool.open for pool in self._pools.values())

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            _drop_all(pool.idle)
            while (waiter := pool.next_waiter()) is not None:
                waiter.set_exception(ConnectFailed("the client is closed"))


class _Tunnel(asyncio.Protocol):
    """The proxy's answer to CONNECT: its status line, once its head has arrived; then it stops
    reading, so that the TLS handshake that follows reads the tunnel's first bytes."""

    _MAX_HEAD = 16384

    def __init__(self) -> None:
        self.answer: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > self._MAX_HEAD:
                self.answer.set_exception(ConnectionBroken("the proxy's answer to CONNECT has no end"))
            return
        line = self._buffer[:self._buffer.find(b"\r\n")].decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self.answer.set_exception(ConnectionBroken(f"the proxy answered CONNECT with {line[:80]!r}"))
            return
        self._transport.pause_reading()
        self.answer.set_result((int(parts[1]), parts[2] if len(parts) > 2 else ""))

    def connection_lost(self, exc) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionBroken("the proxy closed the connection during CONNECT"))


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(PoolExhausted())


def _drop_all(pool: collections.deque[_Connection]) -> None:
    while pool:
        conn = pool.pop()
        conn.pooled = False
        conn.abort()
