"""`gateway serve --workers 2`: two processes on one port, limits, budgets and /metrics exact across them."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, TEAM_KEY
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import free_port, wait_for
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)

HI = {"model": "test/metered", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream():
    with AnthropicFake() as fake:
        yield fake


@pytest.fixture(scope="module")
def two_workers(upstream, redis_server, postgres_server, tmp_path_factory):  # noqa: F811
    redis_server.flush()
    workdir = tmp_path_factory.mktemp("workers")
    config = {
        "redis_url": redis_server.url, "usage_db_url": postgres_server.database("workers"), "admin_key": ADMIN_KEY,
        "providers": {"anthropic": {"base_url": upstream.url, "api_key": "sk-upstream"}},
        # $100 per million output tokens, nothing for input: 100 output tokens cost exactly $0.01
        "models": [{"id": "test/metered", "display_name": "Metered", "context_length": 10000, "max_output": 1000,
                    "endpoints": [{"provider": "anthropic", "upstream_model": "metered",
                                   "pricing": {"input": 0, "output": 100}}]}],
        "keys": [{"key": TEAM_KEY, "team": "team-w"}],
        "teams": [{"name": "team-w", "rpm": 60, "budget_daily_usd": 0.5}],
        "usage_spill_path": str(workdir / "spill.jsonl"),
    }
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    log = open(workdir / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(workdir / "gateway.yaml"),
                             "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    assert wait_for(up, timeout=30), (workdir / "gateway.log").read_text()
    yield url, proc
    proc.terminate()
    proc.wait(20)
    log.close()



def metric_total(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_limits_budgets_and_metrics_are_exact_across_two_workers(two_workers):
    url, proc = two_workers
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2, "two worker processes share the port"

    def post(_):
        return httpx.post(url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=HI, timeout=20)
    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = [r.status_code for r in pool.map(post, range(120))]
    # rpm 60 would admit 60; the $0.50 budget at $0.01 a request admits exactly 50 first
    assert statuses.count(200) == 50
    assert statuses.count(429) == 70
    time.sleep(1.0)  # settlement and metrics are written off the response path
    # every scrape, whichever worker answers it, counts all 120 requests
    for _ in range(6):
        assert metric_total(url, "gateway_requests_total", team="team-w", status="200") == 50
        assert metric_total(url, "gateway_requests_total", team="team-w", status="429") == 70
        assert abs(metric_total(url, "gateway_cost_usd_total", team="team-w") - 0.50) < 1e-9
    usage = httpx.get(url + "/admin/usage", params={"group_by": "team", "team": "team-w"},
                      headers={"x-api-key": ADMIN_KEY}).json()["data"]
    assert usage[0]["requests"] == 120 and abs(usage[0]["cost_usd"] - 0.50) < 1e-9
