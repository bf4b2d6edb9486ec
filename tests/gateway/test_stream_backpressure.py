"""A stream is never capped, and a client that stops reading stops its upstream instead of filling
the gateway's memory; when it reads again, every event arrives."""
from __future__ import annotations

import json
import socket
import threading
import time

from tests.conftest import TEAM_KEY, base_settings
from tests.fakes.anthropic import event, stream_events
from tests.gateway_server import GatewayThread

PIECE = "x" * 65536
PIECES = 512  # 32 MiB of text deltas


class FastStreamingUpstream:
    """An Anthropic upstream on a raw socket that writes a long stream as fast as it is taken, and
    counts the bytes the network has taken so far."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            events = stream_events([PIECE] * PIECES)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            try:
                for data in events:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                    self.sent += len(data)
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def test_a_client_that_stops_reading_holds_its_upstream_back_and_then_gets_every_event():
    upstream = FastStreamingUpstream()
    try:
        with GatewayThread(**base_settings(upstream.url)) as gw:
            body = json.dumps({"model": "anthropic/claude-sonnet-4.5", "max_tokens": 64, "stream": True,
                               "messages": [{"role": "user", "content": "Hi"}]}).encode()
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
                client.connect(("127.0.0.1", gw.port))
                client.settimeout(20)
                client.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                               b"x-api-key: %s\r\ncontent-length: %d\r\n\r\n%s" % (TEAM_KEY.encode(), len(body), body))
                received = bytearray(client.recv(65536))
                assert received.startswith(b"HTTP/1.1 200")
                time.sleep(1.0)  # the client reads nothing for a second
                held_back = upstream.sent
                while not received.endswith(b"0\r\n\r\n"):
                    chunk = client.recv(1 << 20)
                    assert chunk, "the gateway closed the stream early"
                    received += chunk
            total = sum(len(e) for e in stream_events([PIECE] * PIECES))
            assert held_back < total / 2, f"{held_back / 2**20:.0f} MiB of {total / 2**20:.0f} MiB left the upstream"
            assert upstream.sent == total
            assert received.count(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                                  "delta": {"type": "text_delta", "text": PIECE}})[:60]) \
                == PIECES
            assert b"event: message_stop" in received
    finally:
        upstream.close()
