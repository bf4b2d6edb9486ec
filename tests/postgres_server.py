"""Throwaway PostgreSQL servers for tests: a real cluster made by `initdb` in a temporary directory,
served by `postgres` on a free loopback port. Never the machine's own PostgreSQL on 5432.

`initdb` and `postgres` refuse to run as root (as the tests and CI do): then they run as the
`postgres` system user (made by Debian's package) through `setpriv`, in a directory that user owns.
`stop()` and `start()` again keep the data (a database restart); `close()` removes everything.

    with PostgresServer() as server:
        store = await open_record_store(server.url)

The session fixture `postgres_server` is defined here too; a conftest uses it with
`from tests.postgres_server import postgres_server  # noqa: F401` and calls `.reset()` per test.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from tests.redis_server import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (scripts/test.sh does)")
    return Path(initdb).parent


class PostgresServer:
    DATABASE = "gateway"

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"pg-{self.port}-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._user = None if os.geteuid() != 0 else pwd.getpwnam("postgres")
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"], check=True)

    def _as_owner(self, line: list[str]) -> list[str]:
        if self._user is None:
            return line
        return ["setpriv", f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}",
                "--init-groups", *line]

    def _run(self, line: list[str], check: bool = False) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(self._as_owner(line), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              cwd=self.root, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{line[0]} failed: {done.stderr.decode(errors='replace')}")
        return done

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.DATABASE}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> Self:
        if self.running:
            return self
        # No fsync: the tests stop and kill the server, they never pull the machine's power, so a
        # commit in the OS's page cache is as safe as on disk. Commits stay synchronous: one the
        # server acknowledged survives its process.
        line = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=50", "-c", "shared_buffers=32MB"]
        log = open(self.root / "postgres.log", "ab")
        self.process = subprocess.Popen(self._as_owner(line), stdout=log, stderr=log, cwd=self.root)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres on {self.port} exited: {self.log_tail()}")
            if self._psql("SELECT 1", database="postgres").returncode == 0:
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"postgres on {self.port} did not answer: {self.log_tail()}")
        if self._psql("SELECT 1").returncode != 0:
            self._psql(f"CREATE DATABASE {self.DATABASE}", database="postgres")
        return self

    def _psql(self, sql: str, database: str | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", database or self.DATABASE, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                              capture_output=True, timeout=30)

    def sql(self, sql: str) -> str:
        """Run SQL through psql and return its unaligned output (for assertions)."""
        done = self._psql(sql)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode())
        return done.stdout.decode().strip()

    def stop(self) -> None:
        """Stop the server at once (an outage); `start()` brings it back with its data."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: clients are cut off at once (SIGTERM, "smart",
            # would wait for every client to leave).
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def reset(self) -> None:
        """An empty database for the next test."""
        self.database(self.DATABASE)

    def database(self, name: str) -> str:
        """A new, empty database of this name (dropped first if it exists); its URL."""
        self._psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres")
        done = self._psql(f"CREATE DATABASE {name}", database="postgres")
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "postgres.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway server for the session (about a second to make)."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()
