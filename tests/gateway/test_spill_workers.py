"""`gateway serve --workers 2` through Redis outages under load: each worker spills to a file of its
own, every spilled record reaches Redis once Redis returns and from its buffer PostgreSQL, each exactly
once, and no file is left."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import yaml

from gateway.records.base import RequestFilter
from tests.conftest import ADMIN_KEY, TEAM_KEY
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import free_port, wait_for
from tests.gateway.test_usage_after_outage import DurableRedis
from tests.gateway.test_usage_recording import in_database
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)

ASK = {"model": "test/cheap", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_two_workers_spill_to_files_of_their_own_and_every_record_lands_exactly_once(postgres_server,  # noqa: F811
                                                                                      tmp_path):
    db_url = postgres_server.database("workers_spill")
    with AnthropicFake() as upstream, DurableRedis() as redis_server:
        config = {
            "redis_url": redis_server.url, "admin_key": ADMIN_KEY, "store_timeout": 0.2,
            "usage_db_url": db_url, "usage_flush_interval": 0.1, "data_dir": str(tmp_path / "data"),
            "providers": {"anthropic": {"base_url": upstream.url, "api_key": "sk-upstream"}},
            "models": [{"id": "test/cheap", "display_name": "Cheap", "context_length": 10000, "max_output": 100,
                        "endpoints": [{"provider": "anthropic", "upstream_model": "cheap",
                                       "pricing": {"input": 1, "output": 1}}]}],
            "keys": [{"key": TEAM_KEY, "team": "team-s"}],
            "usage_spill_path": str(tmp_path / "spill.jsonl"),
        }
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        url = f"http://127.0.0.1:{port}"
        with open(tmp_path / "gateway.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config",
                                     str(tmp_path / "gateway.yaml"), "--port", str(port), "--workers", "2"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                def up() -> bool:
                    try:
                        return httpx.get(url + "/healthz", timeout=1).status_code == 200
                    except httpx.HTTPError:
                        return False
                assert wait_for(up, timeout=30), (tmp_path / "gateway.log").read_text()

                answered: list[str] = []
                lock = threading.Lock()
                stop_at = time.monotonic() + 7

                def load() -> None:
                    # A new connection per request, so that both workers take a share.
                    while time.monotonic() < stop_at:
                        response = httpx.post(url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=ASK,
                                              timeout=10)
                        assert response.status_code == 200, response.text
                        with lock:
                            answered.append(response.headers["request-id"])
                        time.sleep(0.02)

                threads = [threading.Thread(target=load) for _ in range(4)]
                for t in threads:
                    t.start()
                spilled_by: set[str] = set()
                for _ in range(2):  # two outages under load
                    time.sleep(1)
                    redis_server.stop()
                    time.sleep(0.8)
                    spilled_by |= {p.name for p in tmp_path.glob("spill.*.jsonl")}
                    time.sleep(0.8)
                    spilled_by |= {p.name for p in tmp_path.glob("spill.*.jsonl")}
                    redis_server.start()
                for t in threads:
                    t.join()

                assert len(spilled_by) >= 2, f"each worker spills to a file of its own: {spilled_by}"
                assert all(name.split(".")[1].isdigit() for name in spilled_by)

                def stored() -> list[str]:
                    found, _ = in_database(db_url, "requests", RequestFilter(team="team-s"), limit=100_000)
                    return [r["request_id"] for r in found]
                assert wait_for(lambda: set(answered) <= set(stored()), timeout=10, interval=0.2), \
                    f"{len(set(answered) - set(stored()))} of {len(answered)} answered requests have no record"
                ids = stored()
                assert len(ids) == len(set(ids)) == len(answered), "each record exactly once"
                assert wait_for(lambda: not list(tmp_path.glob("spill.*")), timeout=5)
                assert b"FileNotFoundError" not in (tmp_path / "gateway.log").read_bytes()
            finally:
                proc.terminate()
                proc.wait(20)
