"""What an unauthenticated client can make a worker hold, against a real `gateway serve` over real
sockets: header size and count, the time to send headers and body, the connections per worker."""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.fakes.base import free_port

DEMO_KEY = "sk-demo-test-key-1"
LIMITS = {"GATEWAY_SERVER__HEADER_TIMEOUT": "1", "GATEWAY_SERVER__BODY_RATE_GRACE": "0.5",
          "GATEWAY_SERVER__BODY_MIN_RATE": "1024", "GATEWAY_SERVER__KEEP_ALIVE_TIMEOUT": "0.5"}


class Served:
    """`gateway serve --demo` in a child process with `env` added."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--demo", "--port", str(self.port)],
                                     env={**os.environ, "GATEWAY_DEMO_KEY": DEMO_KEY, **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise RuntimeError("gateway did not start: " + (self.proc.stdout.read() or ""))
            time.sleep(0.05)

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.settimeout(5)
        return sock

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=20)
        return out


@pytest.fixture(scope="module")
def served():
    gateway = Served(LIMITS)
    yield gateway
    gateway.stop()


def read_answer(sock: socket.socket) -> bytes:
    """Everything until the server closes (b"" when it closed without a word)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def send_until_answered(sock: socket.socket, pieces, pause: float = 0.0) -> bytes:
    """Send piece after piece until the server answers or closes; then its answer."""
    for piece in pieces:
        if select.select([sock], [], [], pause)[0]:
            break
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
    return read_answer(sock)


def status_and_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    envelope = json.loads(body)
    assert envelope["type"] == "error"
    return int(lines[0].split()[1]), envelope["error"]


def healthz_ms(served: Served) -> float:
    started = time.monotonic()
    assert httpx.get(served.url + "/healthz", timeout=5).status_code == 200
    return (time.monotonic() - started) * 1000


def test_unfinished_8_mib_header_lines_get_431_and_the_worker_memory_stays_flat(served):
    before = served.rss_mib()
    piece = b"a" * 65536
    answers: list[bytes] = [b""] * 8

    def attack(i: int) -> None:
        with served.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
            answers[i] = send_until_answered(sock, [piece] * 128)  # 8 MiB, never finished

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for answer in answers:
        status, error = status_and_error(answer)
        assert status == 431 and error["type"] == "invalid_request_error"
        assert "65536 bytes" in error["message"]
    assert served.rss_mib() - before < 16


def test_more_headers_than_allowed_get_431(served):
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-h%d: 1\r\n" % i for i in range(150))
                     + b"\r\n")
        status, error = status_and_error(read_answer(sock))
    assert status == 431 and "more than 100 headers" in error["message"]


def test_a_request_line_over_the_limit_gets_414(served):
    with served.connect() as sock:
        status, error = status_and_error(send_until_answered(sock, [b"GET /" + b"a" * 9000, b" HTTP/1.1\r\n\r\n"]))
    assert status == 414 and "8192 bytes" in error["message"]


def test_finished_headers_over_the_byte_limit_get_431(served):
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    with served.connect() as sock:
        sock.sendall(head + b"\r\n")
        status, error = status_and_error(read_answer(sock))
    assert status == 431 and "65536 bytes" in error["message"]


def test_a_large_body_arriving_with_its_headers_is_not_taken_for_headers(served):
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    response = httpx.post(served.url + "/v1/messages", content=body, timeout=10,
                          headers={"x-api-key": DEMO_KEY, "content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_headers_under_every_limit_are_served(served):
    headers = {f"x-h{i}": "v" * 500 for i in range(90)}  # 90 headers, ~45 KB
    assert httpx.get(served.url + "/healthz", headers=headers).status_code == 200


# Alone: it times the gateway's other answers during the attack (200 ms, 0.5 s); another worker's load
# would count in them.
@pytest.mark.alone
def test_300_clients_trickling_their_headers_all_get_408_after_the_header_timeout_and_others_are_served(served):
    clients = [served.connect() for _ in range(300)]
    for sock in clients:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    answered: dict[socket.socket, tuple[bytes, float]] = {}
    checked = False
    while len(answered) < len(clients) and time.monotonic() - started < 6:
        waiting = [sock for sock in clients if sock not in answered]
        for sock in select.select(waiting, [], [], 0.1)[0]:
            answered[sock] = (read_answer(sock), time.monotonic() - started)
        for sock in waiting:
            if sock not in answered:
                try:
                    sock.send(b"x")  # a header byte every 0.1 s
                except OSError:
                    pass
        if not checked and time.monotonic() - started > 0.3:
            assert healthz_ms(served) < 200
            asked = time.monotonic()
            response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": DEMO_KEY}, timeout=5,
                                  json={"model": "claude-opus-4-8", "max_tokens": 16,
                                        "messages": [{"role": "user", "content": "Hello"}]})
            assert response.status_code == 200 and time.monotonic() - asked < 0.5
            checked = True
    for sock in clients:
        sock.close()
    assert len(answered) == 300
    for answer, took in answered.values():
        status, error = status_and_error(answer)
        assert status == 408 and "within 1 s" in error["message"]
        assert took < 2.5


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(served):
    with served.connect() as sock:
        started = time.monotonic()
        assert read_answer(sock) == b""
        assert 0.9 <= time.monotonic() - started < 2.5


def test_a_body_trickled_below_the_minimum_rate_gets_408(served):
    with served.connect() as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + DEMO_KEY.encode()
                     + b"\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
        started = time.monotonic()
        answer = send_until_answered(sock, [b" "] * 100, pause=0.1)
        took = time.monotonic() - started
    status, error = status_and_error(answer)
    assert status == 408 and "1024 bytes per second" in error["message"]
    assert took < 2.5


def test_a_body_sent_steadily_above_the_minimum_rate_is_served(served):
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "x" * 30_000}]}).encode()
    pieces = [body[i:i + 3000] for i in range(0, len(body), 3000)]  # ~3 KB every 0.1 s for ~1 s

    def slow_body():
        for piece in pieces:
            yield piece
            time.sleep(0.1)

    response = httpx.post(served.url + "/v1/messages", content=slow_body(), timeout=10,
                          headers={"x-api-key": DEMO_KEY, "content-type": "application/json",
                                   "content-length": str(len(body))})
    assert response.status_code == 200, response.text


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(served):
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert read_answer(sock) == b""
        assert time.monotonic() - started < 1.5


def test_garbage_instead_of_http_gets_400_in_the_envelope(served):
    with served.connect() as sock:
        sock.sendall(b"\x00\xff\xfe not http\r\n\r\n")
        status, error = status_and_error(read_answer(sock))
    assert status == 400 and error["type"] == "invalid_request_error"


def test_connections_beyond_the_cap_get_529_and_a_freed_slot_serves_again():
    gateway = Served({"GATEWAY_SERVER__MAX_CONNECTIONS": "4", "GATEWAY_SERVER__HEADER_TIMEOUT": "10"})
    try:
        held = [gateway.connect() for _ in range(4)]
        time.sleep(0.2)
        with gateway.connect() as extra:
            answer = read_answer(extra)
        status, error = status_and_error(answer)
        assert status == 529 and error["type"] == "overloaded_error" and "4 connections" in error["message"]
        held.pop().close()
        time.sleep(0.2)
        assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
        for sock in held:
            sock.close()
    finally:
        gateway.stop()


def test_a_second_request_whose_headers_stall_on_a_kept_alive_connection_gets_408(served):
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # and nothing more
        started = time.monotonic()
        status, error = status_and_error(read_answer(sock))
        assert time.monotonic() - started < 2.5
    assert status == 408 and "within 1 s" in error["message"]
