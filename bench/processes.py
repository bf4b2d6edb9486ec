"""Starting, watching and stopping the benchmark's processes.

Every process is started in its own session (so its process group id is its pid), optionally
pinned to one CPU with taskset, with its output in a log file. `Processes.stop_all()` stops each
group it started, by that id, newest first: nothing else on the machine is touched. Peak memory
is VmHWM summed over a process group, and CPU use of a core comes from /proc/stat.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A process did not come up; the message carries the end of its log."""


@dataclass
class Started:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # If the benchmark itself is killed hard, the kernel sends SIGTERM to its direct children.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Processes:
    """What this run started, to be stopped at the end whatever happens."""
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log_path: Path, cpus: str | None = None,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Started:
        if cpus is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]
        log = open(log_path, "ab")
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        proc = Started(name, popen, log_path)
        self.started.append(proc)
        return proc

    def stop(self, proc: Started, grace: float = 10.0) -> None:
        if proc.alive():
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.popen.wait(5)
        # Children that outlived their leader (e.g. workers) are in the same group.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"[bench] could not stop {proc.name} (pid {proc.pid}): {exc}")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http_ok(url: str, proc: Started, timeout: float) -> None:
    """Poll GET `url` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise StartError(f"{proc.name} not ready at {url} after {timeout:.0f} s ({last}):\n{proc.log_tail()}")


def wait_redis(port: int, proc: Started, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(f"redis-server exited:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise StartError(f"redis-server not answering PING on port {port}:\n{proc.log_tail()}")


def redis_command_counts(port: int) -> dict[str, int]:
    """Calls per Redis command since the server started (INFO commandstats): what the gateway
    asked of its store."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        header = b""
        while not header.endswith(b"\r\n"):
            header += sock.recv(1)
        if not header.startswith(b"$"):
            raise ValueError(f"unexpected INFO answer {header!r}")
        size = int(header[1:-2]) + 2  # a bulk string and its trailing CRLF
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
    counts = {}
    for line in data.decode(errors="replace").splitlines():
        # cmdstat_evalsha:calls=123,usec=...,...
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            calls = dict(field.split("=", 1) for field in fields.split(",") if "=" in field).get("calls", "0")
            counts[name] = int(calls)
    return counts


def peak_rss_kib(pgid: int) -> int:
    """VmHWM (peak resident memory) summed over every live process of the group, in KiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
            pgrp = int(stat.rsplit(")", 1)[1].split()[2])
            if pgrp != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_times(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]  # idle + iowait
            total = sum(values[:8])  # guest time is already counted in user
            return total - idle, total
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total else 0.0
