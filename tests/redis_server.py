"""Throwaway Redis servers for tests: real `redis-server` processes on free loopback ports.

`RedisServer` is one server without persistence (`--save "" --appendonly no`); `stop()` and
`start()` again on the same port simulate an outage, `pause()`/`resume()` a server that accepts
connections but never answers. `RedisClusterServers` is a three-master Redis Cluster made with
`redis-cli --cluster create`. `CommandLog` lists the commands clients send. Never the machine's
own Redis on 6379.

    with RedisServer() as server:
        store = create_store(server.url)

The session fixtures `redis_server` and `redis_cluster` are defined here too; a conftest uses
them with `from tests.redis_server import redis_server  # noqa: F401` and calls `.flush()` per
test.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
import redis

from tests.ports import claim_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
CLUSTER_BUS_OFFSET = 10000  # Redis Cluster talks to its peers on port + 10000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster_bus: bool = False) -> int:
    """A free loopback port (never 6379) that no other test of the run was given (tests/ports.py);
    with `cluster_bus`, port + 10000 is free and this caller's as well."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port == 6379:
            continue
        if not cluster_bus:
            if claim_port(port):
                return port
            continue
        bus = port + CLUSTER_BUS_OFFSET
        if bus < 65536 and _port_free(bus) and claim_port(port) and claim_port(bus):
            return port
    raise RuntimeError("no free port found")


class RedisServer:
    def __init__(self, port: int | None = None, *, cluster: bool = False,
                 workdir: str | None = None) -> None:
        self.cluster = cluster
        self.port = port or free_port(cluster_bus=cluster)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"redis-{self.port}-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain synchronous client for assertions and housekeeping."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           decode_responses=True)

    def command_line(self) -> list[str]:
        line = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                "--logfile", str(self.workdir / "redis.log"), "--protected-mode", "no"]
        if self.cluster:
            line += ["--cluster-enabled", "yes", "--cluster-config-file",
                     f"nodes-{self.port}.conf", "--cluster-node-timeout", "2000"]
        return line

    def start(self, timeout: float = 10.0) -> Self:
        if self.running:
            return self
        self.process = subprocess.Popen(self.command_line(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited: {self.log_tail()}")
            try:
                with self.client() as c:
                    if c.ping():
                        return self
            except redis.RedisError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server on {self.port} did not answer: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Kill the server (an outage); `start()` brings it back, empty, on the same port."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def pause(self) -> None:
        """Freeze the server: connections open, nothing answers (a hung Redis)."""
        if self.running:
            os.kill(self.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self) -> None:
        if self.running:
            os.kill(self.process.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()
            c.script_flush()

    def close(self) -> None:
        """Stop for good and remove the working directory."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.workdir / "redis.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class CommandLog:
    """The commands clients send to a server, as MONITOR reports them, leaving out the ones a
    Lua script runs and connection handshakes (HELLO, CLIENT SETINFO...).

        with CommandLog(server) as log:
            ...
        assert log.names() == ["evalsha"]
    """

    HANDSHAKE = frozenset({"hello", "client", "auth", "select"})

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self._sock: socket.socket | None = None
        self._lines: list[str] = []

    def __enter__(self) -> Self:
        self._sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._read_until(lambda line: line == "+OK")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_until(self, done: object) -> None:
        buffer = b""
        assert self._sock is not None
        while True:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise RuntimeError("MONITOR connection closed")
            buffer += chunk
            *complete, buffer = buffer.split(b"\r\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                if done(line):  # type: ignore[operator]
                    return
                self._lines.append(line)

    def names(self) -> list[str]:
        """Command names seen so far, lowercased, in order."""
        marker = f"command-log-end-{time.monotonic_ns()}"
        with self.server.client() as c:
            c.echo(marker)
        self._read_until(lambda line: marker in line)
        names = []
        for line in self._lines:
            if " lua]" in line or "]" not in line:
                continue
            words = line.split("] ", 1)[1].split(" ")
            name = words[0].strip('"').lower()
            if name not in self.HANDSHAKE:
                names.append(name)
        self._lines = []
        return names


class RedisClusterServers:
    """Three masters, no replicas, every slot assigned."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [RedisServer(cluster=True) for _ in range(masters)]

    @property
    def url(self) -> str:
        """The URL the store understands as a cluster (any node is enough to discover it)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 20.0) -> Self:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [REDIS_CLI, "--cluster", "create",
                 *[f"127.0.0.1:{n.port}" for n in self.nodes],
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ready(n) for n in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError("redis cluster did not become ready")

    def _node_ready(self, node: RedisServer) -> bool:
        with node.client() as c:
            info = c.execute_command("CLUSTER", "INFO")
            if isinstance(info, dict):
                state, known = info.get("cluster_state"), info.get("cluster_known_nodes")
            else:
                fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
                state, known = fields.get("cluster_state"), fields.get("cluster_known_nodes")
            return state == "ok" and int(known or 0) == len(self.nodes)

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway server for the session."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """One three-master cluster for the session (about 3 s to form)."""
    with RedisClusterServers() as cluster:
        yield cluster
