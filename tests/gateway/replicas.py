"""Gateway replicas as real `gateway serve` processes sharing one config (and so one store).

`Replicas` starts N processes from one YAML config, waits until each answers `/healthz`, and
talks to them the way an operator and a client would: the admin API for teams, keys and usage,
`/v1/messages` for traffic. Each process writes its output to a log file in the work folder, whose
tail is shown when a process fails to start.

    with Replicas(config, workdir, count=2) as replicas:
        replicas.create_team("team-x", rpm=100)
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from tests.fakes.base import free_port

START_TIMEOUT_S = 20.0


class GatewayProcess:
    """One `gateway serve` process on a free loopback port."""

    def __init__(self, config_file: Path, workdir: Path, name: str) -> None:
        self.config_file = config_file
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.spill_path = workdir / f"{name}-spill.jsonl"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        # The test run's own GATEWAY_* variables would override the config file: leave them out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env["GATEWAY_USAGE_SPILL_PATH"] = str(self.spill_path)
        env["GATEWAY_DATA_DIR"] = str(self.spill_path.with_name(self.spill_path.stem + "-data"))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_file),
                 "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway on port {self.port} did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Replicas:
    """N gateway processes started from the same config, and the calls tests make on them."""

    def __init__(self, config: dict[str, Any], workdir: Path, *, count: int, admin_key: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(config))
        self.config = config
        self.admin_key = admin_key
        self.processes = [GatewayProcess(config_file, workdir, f"gateway-{i}") for i in range(count)]

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    def start(self) -> Self:
        try:
            for process in self.processes:
                process.launch()  # all at once: they import in parallel
            for process in self.processes:
                process.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the admin API -----------------------------------------------------------------------
    def admin(self, method: str, path: str, *, via: int = 0, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.urls[via] + path, headers={"x-api-key": self.admin_key},
                             timeout=10, **kwargs)

    def create_team(self, name: str, *, via: int = 0, **limits: Any) -> dict[str, Any]:
        response = self.admin("POST", "/admin/teams", via=via, json={"name": name, **limits})
        assert response.status_code == 201, response.text
        return response.json()

    def create_key(self, team: str, *, via: int = 0, **limits: Any) -> dict[str, Any]:
        """The created key, with its secret under "key"."""
        response = self.admin("POST", f"/admin/teams/{team}/keys", via=via, json=limits)
        assert response.status_code == 201, response.text
        return response.json()

    def usage(self, team: str, *, via: int = 0) -> dict[str, Any]:
        """The team's usage row (`group_by=team`); all zeros before its first record."""
        response = self.admin("GET", "/admin/usage", via=via, params={"group_by": "team", "team": team})
        assert response.status_code == 200, response.text
        rows = response.json()["data"]
        assert len(rows) <= 1, rows
        return rows[0] if rows else {"team": team, "requests": 0, "cost_usd": 0.0}

    def wait_recorded(self, team: str, requests: int, timeout: float = 10.0) -> dict[str, Any]:
        """The team's usage row once it counts `requests` requests.

        Usage records are written in the same batch as the settlements, after them, so a
        request that is recorded has also been settled (its lease and reservation released).
        """
        deadline = time.monotonic() + timeout
        while True:
            row = self.usage(team)
            if row["requests"] >= requests or time.monotonic() > deadline:
                assert row["requests"] == requests, f"expected {requests} recorded requests: {row}"
                return row
            time.sleep(0.05)
