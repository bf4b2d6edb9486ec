"""Inbound HTTP/1.1 with bounds: what a connection may cost a worker before any key is checked.

uvicorn's httptools protocol parses requests but bounds none of what a client controls: a header
line grows in memory for as long as the client sends it, a client may take forever over its
headers or its body, and `limit_concurrency` answers 503 only once a request's headers are in, so
idle and half-sent connections are never refused. This protocol is uvicorn's with those bounds
added (settings `server:`):

- the request line, the header bytes and the number of headers are capped as they arrive
  (414 / 431); an unfinished header line is cut off once the head's bytes pass the caps;
- the request line and headers must arrive within `header_timeout`, counted from the
  connection's start or the request's first byte (408, or a plain close when nothing came);
- after `body_rate_grace`, a body must have averaged `body_min_rate` bytes per second since its
  headers (408); time while the gateway itself is not reading does not count;
- a worker holds at most `max_connections` connections; one more gets 529 and is closed.

Refusals are Anthropic's error envelope with `connection: close`. The response is written, the
write side shut, and what the client still sends is read and dropped for a moment before closing:
closing at once with unread bytes would reset the connection and lose the answer.

The time limits are checked by one sweep per worker over its connections (every second, or a
quarter of the shortest limit), not by a timer per request: the request path pays a few counter
updates and no clock reading, and a limit holds to within one sweep interval.
"""
from __future__ import annotations

import asyncio
import http
import weakref
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import error_body, error_type_for
from gateway.exchange import new_request_id
from gateway.settings import Server

# After a refusal, how long the client's remaining bytes are read and dropped before closing.
LINGER_S = 1.0

# One sweep timer per running server (its shared state), while it has connections.
_sweeps: weakref.WeakKeyDictionary[Any, asyncio.TimerHandle] = weakref.WeakKeyDictionary()


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refusal_bytes(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer in the envelope that closes the connection."""
    body = error_body("overloaded_error" if status == 529 else error_type_for(status), message)
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded"
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"request-id: {new_request_id()}\r\nconnection: close\r\n\r\n").encode("latin-1") + body


class CorkedTransport:
    """A connection's transport whose writes made in one turn of the event loop leave together.

    uvicorn writes an answer's head the moment the application sends it, and its body with the
    next send: two system calls and two TCP segments for every JSON answer (and for a stream's
    head and first events), where one would do. Here the writes of a turn are gathered and
    written in one call at its end; closing or shutting the write side first writes what waits.
    Everything else is the transport's own."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of `Server` settings (see the module docstring)."""

    def __init__(self, config, server_state, app_state, _loop=None, *, limits: Server) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limit_concurrency = None  # the connection cap below replaces uvicorn's plain-text 503
        self._limits = limits
        self._max_line = limits.max_request_line_bytes
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        # An unfinished head is cut off past every cap plus the separators of the lines in it.
        self._max_head_bytes = limits.max_request_line_bytes + limits.max_header_bytes + 4 * limits.max_headers + 16
        self._bytes_in = 0         # every byte received on the connection
        self._read_start = 0       # _bytes_in before the read being parsed
        # A head or a body is being received: flags and byte marks are set on the request path;
        # the time it began is stamped by the sweep that first sees it (None until then), so
        # that a request costs no clock reading.
        self._in_head = True       # the connection's first request starts with the connection
        # Where the head began, from below and from above: the end and the start of the read it
        # began in (the parser does not say where in a read a request starts).
        self._head_mark = 0
        self._head_read_start = 0
        self._head_since: float | None = None
        self._in_body = False
        self._body_mark = 0
        self._body_since: float | None = None
        self._refused = False

    # -- connection -------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections:
            self.transport = transport
            self._refused = True
            transport.write(refusal_bytes(529, f"the gateway holds its limit of {self._limits.max_connections} "
                                               f"connections; retry shortly"))
            transport.close()
            return
        super().connection_made(CorkedTransport(transport, self.loop))
        self._watch()

    def _watch(self) -> None:
        state = self.server_state
        if state not in _sweeps:
            limits = self._limits
            interval = max(0.05, min(1.0, limits.header_timeout / 4, limits.body_rate_grace / 4))
            _sweeps[state] = self.loop.call_later(interval, _sweep, state, self.loop, interval)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped while the refusal lingers
        self._unset_keepalive_if_required()
        self._read_start = self._bytes_in
        self._bytes_in += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self.refuse(refusal.status, refusal.message)
            else:
                self.refuse(400, "invalid HTTP request")
            return
        except httptools.HttpParserError:
            self.refuse(400, "invalid HTTP request")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Still inside a head after this read: every byte since it began is the head's. (A read
        # that completed the head may hold body bytes too: on_headers_complete judges that one.)
        if self._in_head and self._bytes_in - self._head_mark > self._max_head_bytes:
            self.refuse(431, f"the request's headers exceed {self._max_header_bytes} bytes")

    def refuse(self, status: int, message: str) -> None:
        """Answer `status` in the envelope (unless a response has begun) and close the connection."""
        if self._refused:
            return
        self._refused = True
        self._in_head = self._in_body = False
        cycle = self.cycle
        started = False
        if cycle is not None and not cycle.response_complete:
            started = cycle.response_started
            cycle.disconnected = True  # the application's receive() answers http.disconnect now
            cycle.keep_alive = False
            cycle.message_event.set()
        transport = self.transport
        if transport.is_closing():
            return
        if started:
            transport.close()
            return
        self.flow.resume_reading()
        transport.write(refusal_bytes(status, message))
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_S, transport.close)

    # -- parser callbacks (uvicorn's, with bounds) ---------------------------------------------
    # uvicorn's callbacks are called directly, not through super(): three super objects per
    # request cost more than the bounds themselves.
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        if not self._in_head:
            self._in_head = True
            self._head_since = None
            self._head_mark = self._bytes_in
            self._head_read_start = self._read_start

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self._max_line:
            raise _Refusal(414, f"the request line exceeds {self._max_line} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        # The bytes read since the head began at the most (the head, perhaps with bytes before and
        # after it in the same reads) bound its header bytes: only a head that may be over the
        # limit has its headers counted.
        if self._bytes_in - self._head_read_start > self._max_header_bytes or len(self.headers) > self._max_headers:
            self._check_headers()
        self._in_body = True
        self._body_since = None
        self._body_mark = self._bytes_in
        HttpToolsProtocol.on_headers_complete(self)

    def _check_headers(self) -> None:
        if len(self.headers) > self._max_headers:
            raise _Refusal(431, f"the request has more than {self._max_headers} headers")
        if sum(len(name) + len(value) for name, value in self.headers) > self._max_header_bytes:
            raise _Refusal(431, f"the request's headers exceed {self._max_header_bytes} bytes")

    def on_body(self, body: bytes) -> None:
        # uvicorn gathers a body in a bytearray and hands it over as bytes: two copies of a body
        # that usually arrives whole in one read. A first chunk is held as the bytes object it is
        # (adding it to empty bytes is that object, and handing bytes over copies nothing); a
        # second one turns the holding back into a bytearray, so that many chunks still add up
        # in linear time.
        cycle = self.cycle
        if cycle is not None:
            held = cycle.body
            if not held:
                cycle.body = b""
            elif type(held) is bytes:
                cycle.body = bytearray(held)
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._in_body = False
        HttpToolsProtocol.on_message_complete(self)

    # -- the sweep --------------------------------------------------------------------------------
    def check_progress(self, now: float) -> None:
        """Refuse a client that is too slow with its head or its body."""
        if self._refused:
            return
        limits = self._limits
        if self.flow is not None and self.flow.read_paused:
            # The gateway is not reading (its application is behind, or requests are pipelined):
            # the wait is not the client's. Its clock starts again when reading resumes.
            self._head_since = self._body_since = None
            return
        if self._in_head:
            if self._head_since is None:
                self._head_since = now
            elif now - self._head_since > limits.header_timeout:
                if self._bytes_in > self._head_read_start:  # a request has begun
                    self.refuse(408, f"the request's headers did not arrive within {limits.header_timeout:g} s")
                else:
                    self._refused = True  # nothing was asked: nothing to answer
                    self.transport.close()
            return
        if not self._in_body or not limits.body_min_rate:
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        since = self._body_since
        if since is None:
            self._body_since, self._body_mark = now, self._bytes_in
            return
        elapsed = now - since
        if elapsed > limits.body_rate_grace and self._bytes_in - self._body_mark < limits.body_min_rate * elapsed:
            self.refuse(408, f"the request body arrived slower than {limits.body_min_rate} bytes per second")


def _sweep(state, loop: asyncio.AbstractEventLoop, interval: float) -> None:
    connections = state.connections
    if not connections:
        _sweeps.pop(state, None)  # the next connection starts it again
        return
    now = loop.time()
    for conn in list(connections):
        if isinstance(conn, GuardedHttpToolsProtocol):
            conn.check_progress(now)
    _sweeps[state] = loop.call_later(interval, _sweep, state, loop, interval)
