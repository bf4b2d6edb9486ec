"""What the gateway holds of an upstream is bounded: an answer's size, its duration, the connections."""
from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import TEAM_KEY, base_settings
from tests.fakes.anthropic import AnthropicFake, message_body, sse_reply, stream_events
from tests.fakes.base import Reply, free_port, wait_for
from tests.gateway_server import GatewayThread

ASK = {"model": "anthropic/claude-sonnet-4.5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def fake():
    with AnthropicFake() as upstream:
        yield upstream


def post(gw: GatewayThread, body: dict = ASK, timeout: float = 10) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": TEAM_KEY}, timeout=timeout)


def test_json_answer_over_the_size_limit_is_a_502_naming_the_provider_and_is_not_read_to_its_end(fake):
    # 8 MiB offered against a 1 MiB limit; the gateway stops reading (the upstream sees it leave).
    chunk = b" " * 65536
    fake.enqueue(Reply(chunks=[b'{"id": "msg_1", "pad": "'] + [chunk] * 128 + [b'"}'], delay_between=0.001))
    with GatewayThread(**base_settings(fake.url, upstream={"max_answer_bytes": 1024 * 1024})) as gw:
        response = post(gw)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "api_error"
    assert "anthropic" in error["message"] and str(1024 * 1024) in error["message"]
    assert "sk-upstream-secret" not in response.text
    assert fake.disconnects == 1


def test_json_answer_under_the_size_limit_is_served(fake):
    fake.enqueue(Reply(chunks=[json.dumps(message_body("x" * 200_000)).encode()]))
    with GatewayThread(**base_settings(fake.url, upstream={"max_answer_bytes": 1024 * 1024})) as gw:
        response = post(gw)
    assert response.status_code == 200 and len(response.json()["content"][0]["text"]) == 200_000


def test_json_answer_trickling_past_timeouts_total_is_a_504_at_the_deadline(fake):
    # Each byte comes well within the idle timeout, but the whole answer would take 4 s.
    body = json.dumps(message_body()).encode()
    step = max(1, len(body) // 80)
    fake.enqueue(Reply(chunks=[body[i:i + step] for i in range(0, len(body), step)], delay_between=0.05))
    settings = base_settings(fake.url, timeouts={"first_byte": 5, "idle": 5, "total": 0.6})
    with GatewayThread(**settings) as gw:
        started = time.monotonic()
        response = post(gw)
        took = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["type"] == "timeout_error"
    assert "anthropic" in response.json()["error"]["message"]
    assert took < 1.5


def test_requests_beyond_the_connection_cap_get_529_overloaded_when_no_connection_frees_in_time(fake):
    fake.enqueue(sse_reply(stream_events(["a", "b", "c"]), delay_between=0.15))
    settings = base_settings(fake.url, upstream={"max_connections_per_origin": 1, "pool_wait": 0.2})
    with GatewayThread(**settings) as gw, concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(post, gw, {**ASK, "stream": True})
        deadline = time.monotonic() + 5
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        refused = post(gw)
        waited = time.monotonic() - started
        assert streaming.result().status_code == 200
        after = post(gw)
    assert refused.status_code == 529, refused.text
    error = refused.json()["error"]
    assert error["type"] == "overloaded_error" and "anthropic" in error["message"]
    assert 0.15 <= waited < 1.5
    assert len(fake.requests) == 2  # the refused request never reached the upstream
    assert after.status_code == 200


class HugeJsonUpstream:
    """An Anthropic upstream on a raw socket whose JSON answer declares and sends 200 MB, as fast as
    the network takes it; `sent` counts what it got out before the gateway hung up."""

    SIZE = 200 * 1000 * 1000

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head = b'{"id":"msg_1","type":"message","content":[{"type":"text","text":"'
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (self.SIZE, head))
            block = b"x" * (1 << 20)
            try:
                while self.sent < self.SIZE - len(head) - (1 << 20):
                    conn.sendall(block)
                    self.sent += len(block)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_200_mb_json_answer_costs_the_gateway_process_no_more_than_its_answer_limit(tmp_path):
    upstream = HugeJsonUpstream()
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({
        "providers": {"anthropic": {"base_url": f"http://127.0.0.1:{upstream.port}", "api_key": "sk-upstream-secret"}},
        "keys": [{"key": TEAM_KEY, "team": "team-a"}], "retries": {"per_endpoint": 1}}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)],
                            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _up(url), timeout=20), "gateway did not start"
        before = rss_mib(proc.pid)
        peak = before
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, url + "/v1/messages", json=ASK, headers={"x-api-key": TEAM_KEY},
                                 timeout=30)
            while not answer.done():
                peak = max(peak, rss_mib(proc.pid))
                time.sleep(0.005)
            response = answer.result()
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "api_error" and "anthropic" in response.json()["error"]["message"]
        assert peak - before < 48, f"the gateway grew by {peak - before:.0f} MiB"
        assert upstream.sent < 64 * 1000 * 1000  # it stopped reading long before the end
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
        upstream.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz").status_code == 200
    except httpx.HTTPError:
        return False
