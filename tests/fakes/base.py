"""A scripted upstream: a real HTTP server on a loopback port, run in its own thread and loop.

It records every request it receives and answers each with the next scripted `Reply` (or the
default reply once the script is empty). Protocol fakes subclass it and add helpers that build
replies in their wire format.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.ports import claim_port


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """One scripted answer.

    `chunks` are written one by one (flushed), `delay_first` seconds before the status line and
    `delay_between` seconds between chunks. `cut` closes the connection after the chunks instead
    of ending the response properly: an upstream that dies mid-stream.
    """
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    content_type: str = "application/json"
    delay_first: float = 0.0
    delay_between: float = 0.0
    cut: bool = False
    hang: bool = False  # accept the request and never answer


class ScriptedServer:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.requests: list[RecordedRequest] = []
        self.script: deque[Reply] = deque()
        self.default: Reply | None = None
        self.disconnects = 0  # responses whose client went away before the end
        self.cut: list[RecordedRequest] = []  # the requests of those responses
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def enqueue(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def reset(self) -> None:
        self.requests.clear()
        self.script.clear()
        self.disconnects = 0
        self.cut.clear()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            fut.result(5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    # -- serving -----------------------------------------------------------------------------
    def next_reply(self, request: RecordedRequest) -> Reply:
        if self.script:
            return self.script.popleft()
        if self.default is not None:
            return self.default
        return self.auto_reply(request)

    def auto_reply(self, request: RecordedRequest) -> Reply:
        """What a subclass answers when nothing is scripted."""
        return Reply(status=500, chunks=[b'{"error":"nothing scripted"}'])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = RecordedRequest(
            method=request.method, path=request.path, query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            header_list=[(k.lower(), v) for k, v in request.headers.items()], body=body)
        self.requests.append(recorded)
        reply = self.next_reply(recorded)
        if reply.hang:
            await asyncio.sleep(3600)
        if reply.delay_first:
            await asyncio.sleep(reply.delay_first)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_type = reply.content_type
        if not reply.cut and len(reply.chunks) <= 1 and not reply.delay_between:
            response.content_length = sum(len(c) for c in reply.chunks)
        try:
            await response.prepare(request)
            for i, chunk in enumerate(reply.chunks):
                if i and reply.delay_between:
                    await asyncio.sleep(reply.delay_between)
                await response.write(chunk)
            if reply.cut:
                request.transport.close()
                return response
            await response.write_eof()
        except (OSError, asyncio.CancelledError, ConnectionError) as exc:  # aiohttp's reset errors included
            self.disconnects += 1
            self.cut.append(recorded)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return response
        return response


def free_port() -> int:
    """A free loopback port that no other test of the run was given (tests/ports.py)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if claim_port(port):
            return port
    raise RuntimeError("no free port found")


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
