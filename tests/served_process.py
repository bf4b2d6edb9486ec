"""`gateway serve` as a child process whose output (stdout and stderr, as an operator sees them) is
read line by line while it runs, so a test can wait for a log line."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import httpx

from tests.fakes.base import free_port

GATEWAY = [sys.executable, "-m", "gateway.cli"]


class ServedProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, *, cwd: str | None = None,
                 port: int | None = None, wait: bool = True) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        full_env.update(env or {})
        # A data folder of its own (the embedded usage database lives there), unless the test names
        # one: records of other runs must never show in this one's answers.
        self._data_dir = None
        if "GATEWAY_DATA_DIR" not in full_env:
            self._data_dir = full_env["GATEWAY_DATA_DIR"] = tempfile.mkdtemp(prefix="gw-data-")
        self.proc = subprocess.Popen(GATEWAY + ["serve", "--port", str(self.port)] + args, env=full_env, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            self.wait_healthy()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, predicate: Callable[[str], bool] | str, timeout: float = 10.0) -> str:
        """The first output line matching, waiting for it to appear."""
        match = predicate if callable(predicate) else (lambda line: predicate in line)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no such line within {timeout} s; output:\n" + "\n".join(self.lines))
                self._changed.wait(min(remaining, 0.2))

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("gateway did not start:\n" + self.output)
            time.sleep(0.05)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.output

    def __enter__(self) -> "ServedProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
