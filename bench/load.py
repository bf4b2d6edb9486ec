"""Driving a target: one smoke check per request kind, and closed-loop wrk runs.

A smoke check sends one request and verifies what a client would: a JSON answer of type
`message` with usage, or a `text/event-stream` that runs from message_start to message_stop.
A wrk run keeps N connections busy for a fixed time (closed loop: each connection sends its next
request when the previous answer is complete) and reports throughput and latency to the last byte.
"""
from __future__ import annotations

import http.client
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import processes

POST_LUA = Path(__file__).with_name("post.lua")


class SmokeError(RuntimeError):
    """A target answered something a client could not use."""


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # http://127.0.0.1:PORT/v1/messages
    api_key: str


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu_busy: float  # share of the target's CPUs busy during the run; NaN when not pinned

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _post(target: Target, body: bytes) -> tuple[int, str, bytes]:
    parts = urlsplit(target.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", parts.path, body=body, headers={
            "content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": target.api_key})
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        conn.close()


def smoke_json(target: Target, body: bytes) -> str:
    status, content_type, payload = _post(target, body)
    if status != 200 or not content_type.startswith("application/json"):
        raise SmokeError(f"{target.name}: JSON request -> {status} {content_type}: {payload[:500]!r}")
    message = json.loads(payload)
    if message.get("type") != "message" or "usage" not in message:
        raise SmokeError(f"{target.name}: not an Anthropic message: {payload[:500]!r}")
    extra = f", provider {message['provider']}" if "provider" in message else ""
    return f"model {message.get('model')}{extra}, usage {json.dumps(message['usage'], separators=(',', ':'))}"


def smoke_stream(target: Target, body: bytes) -> str:
    status, content_type, payload = _post(target, body)
    if status != 200 or not content_type.startswith("text/event-stream"):
        raise SmokeError(f"{target.name}: streaming request -> {status} {content_type}: {payload[:500]!r}")
    names = []
    for block in payload.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("event:"):
                names.append(line[6:].strip())
    if not names or names[0] != "message_start" or names[-1] != "message_stop":
        raise SmokeError(f"{target.name}: stream is not message_start .. message_stop: {names}")
    return summarize_events(names)


def summarize_events(names: list[str]) -> str:
    """message_start, ping, 12×content_block_delta, ... : runs of one event collapsed."""
    out: list[str] = []
    i = 0
    while i < len(names):
        j = i
        while j < len(names) and names[j] == names[i]:
            j += 1
        out.append(names[i] if j - i == 1 else f"{j - i}×{names[i]}")
        i = j
    return ", ".join(out)


def run_wrk(target: Target, body_file: Path, connections: int, seconds: int, load_cpus: str | None,
            target_cpus: list[int], log_path: Path) -> Result:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
            "-s", str(POST_LUA), target.url, "--", str(body_file), target.api_key]
    if load_cpus is not None:
        argv = ["taskset", "-c", load_cpus, *argv]
    before = [processes.cpu_times(cpu) for cpu in target_cpus]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = [processes.cpu_times(cpu) for cpu in target_cpus]
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(argv)}\n{completed.stdout}{completed.stderr}\n")
    line = next((l for l in completed.stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}")
    data = json.loads(line.split(" ", 1)[1])
    latency = data["latency_us"]
    busy = [processes.busy_share(b, a) for b, a in zip(before, after)]
    return Result(requests=data["requests"], seconds=data["duration_us"] / 1e6,
                  p50_ms=latency["p50"] / 1000, p90_ms=latency["p90"] / 1000, p99_ms=latency["p99"] / 1000,
                  max_ms=latency["max"] / 1000, errors=data["errors"],
                  cpu_busy=sum(busy) / len(busy) if busy else float("nan"))
