"""A request body as the upstream gets it, whatever pieces it reached `gateway serve` in: whole with
its headers, alone in one piece, in many pieces with pauses between them, in reads larger than the
gateway holds before it takes them, or chunked with many chunks in one read; on one kept-alive
connection, over real sockets."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.fakes.base import free_port

TEAM_KEY = "sk-team-inbound-body-1"


@pytest.fixture(scope="module")
def served(tmp_path_factory, anthropic_upstream):
    config = tmp_path_factory.mktemp("inbound-body") / "gateway.yaml"
    config.write_text(f"providers:\n  anthropic: {{base_url: '{anthropic_upstream.url}', api_key: sk-up-1}}\n"
                      f"keys:\n  - {{key: {TEAM_KEY}, team: team-a}}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("gateway did not start: " + (proc.stdout.read() or ""))
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.communicate(timeout=20)


def body_of(text: str) -> bytes:
    return json.dumps({"model": "claude-haiku-4-5", "max_tokens": 8,
                       "messages": [{"role": "user", "content": text}]}).encode()


def head_of(body: bytes) -> bytes:
    return (b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + TEAM_KEY.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n")


def read_one_answer(sock: socket.socket) -> int:
    """The status of the next answer on the connection, read to its end (it has a content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1])


def test_a_body_in_any_pieces_reaches_the_upstream_byte_for_byte(served, upstream):
    # Distinct text in every piece, so that a piece lost, repeated or out of order shows.
    texts = ["".join(f"{n}:{i:06d} " for i in range(count)) for n, count in
             (("whole", 4000), ("apart", 4000), ("pieces", 4000), ("large", 150_000), ("chunked", 4000))]
    whole, apart, pieces, large, chunked = (body_of(text) for text in texts)
    with socket.create_connection(("127.0.0.1", served)) as sock:
        sock.settimeout(10)
        sock.sendall(head_of(whole) + whole)  # with its headers, in one write
        assert read_one_answer(sock) == 200
        sock.sendall(head_of(apart))
        time.sleep(0.05)
        sock.sendall(apart)  # alone, in one write
        assert read_one_answer(sock) == 200
        sock.sendall(head_of(pieces))
        for at in range(0, len(pieces), 997):  # many writes, some held together before the gateway reads
            sock.sendall(pieces[at:at + 997])
            if at % 5 == 0:
                time.sleep(0.01)
        assert read_one_answer(sock) == 200
        # In large reads, faster than it is taken.
        sock.sendall(head_of(large) + large)
        assert read_one_answer(sock) == 200
        # Chunked, in one write: many pieces, gathered before the gateway takes them.
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + TEAM_KEY.encode()
                     + b"\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"".join(b"%x\r\n%s\r\n" % (len(chunked[at:at + 500]), chunked[at:at + 500])
                                for at in range(0, len(chunked), 500)) + b"0\r\n\r\n")
        assert read_one_answer(sock) == 200
    received = [request.json()["messages"][0]["content"] for request in upstream.requests]
    assert received == texts
