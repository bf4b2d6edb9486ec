"""Runs a real gateway (uvicorn, real sockets) inside the test process, in its own thread and loop.

Streaming tests need a real server: an in-process ASGI transport buffers responses and would hide
a buffering bug.
"""
from __future__ import annotations

import tempfile
import threading
import time
from typing import Any

import uvicorn

from gateway.app import Gateway, GatewayApp
from gateway.settings import Settings
from tests.fakes.base import free_port


class GatewayThread:
    def __init__(self, **settings: Any) -> None:
        # Each gateway keeps its own record store (the SQLite default) unless a test names one.
        settings.setdefault("data_dir", tempfile.mkdtemp(prefix="gateway-data-"))
        self.settings = Settings(**settings)
        self.gateway = Gateway(self.settings)
        self.app = GatewayApp(self.gateway)
        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, loop="asyncio", http="httptools",
                                lifespan="on", log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"gateway-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "GatewayThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> "GatewayThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
