"""Config reload without a restart: SIGHUP and POST /admin/reload re-read the file, swap catalog,
providers, keys and limits at once, refuse an invalid file with its reason, and fail no request."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
import yaml

from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY
from tests.fakes.base import Reply
from tests.fakes.openai import OpenAIFake, Usage, completion_body
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import redis_server  # noqa: F401  (session fixture)
from tests.served_process import ServedProcess

NEW_KEY = "sk-test-team-c-0003"
ASK = {"model": "local/coder", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def config(url: str, price: float, keys=(TEAM_KEY, OTHER_TEAM_KEY), models_extra: bool = False, **extra) -> dict:
    models = [{"id": "local/coder", "endpoints": [{"provider": "local", "upstream_model": "coder",
                                                   "pricing": {"input": price, "output": price}}]}]
    if models_extra:
        models.append({"id": "local/other", "endpoints": [{"provider": "local", "upstream_model": "other"}]})
    return {"admin_key": ADMIN_KEY, "providers": {"local": {"protocol": "openai", "base_url": url + "/v1"}},
            "models": models, "keys": [{"key": key, "team": "team-a"} for key in keys], **extra}


@pytest.fixture(scope="module")
def upstream():
    with OpenAIFake(prompt_tokens=1000) as fake:  # 1,000 input tokens, max_tokens output tokens
        yield fake


def write(path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    os.replace(tmp, path)  # the reload reads a whole file, never a half-written one


def cost(url: str, key: str = TEAM_KEY) -> float:
    answer = httpx.post(url + "/v1/messages", headers={"x-api-key": key}, json=ASK, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["usage"]["cost"]


def usage_cost(url: str) -> float:
    rows = httpx.get(url + "/admin/usage", params={"group_by": "team"}, headers={"x-api-key": ADMIN_KEY}).json()
    return sum(row["cost_usd"] for row in rows["data"])


def test_sighup_with_a_changed_price_changes_the_recorded_cost_of_the_next_request(upstream, tmp_path):
    path = tmp_path / "gateway.yaml"
    write(path, config(upstream.url, price=1.0))
    # A data folder of its own: the usage this test sums is its own requests' only.
    with ServedProcess(["--config", str(path)], env={"GATEWAY_DATA_DIR": str(tmp_path / "data")}) as served:
        assert cost(served.url) == pytest.approx(1100 / 1e6)
        write(path, config(upstream.url, price=10.0))
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for("config reloaded")
        assert cost(served.url) == pytest.approx(11000 / 1e6)
        assert wait_for_value(lambda: usage_cost(served.url), 12100 / 1e6)


def wait_for_value(read, expected: float, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read() == pytest.approx(expected):
            return True
        time.sleep(0.05)
    return False


def test_reload_swaps_keys_and_an_invalid_file_is_refused_with_its_reason(upstream, tmp_path):
    path = tmp_path / "gateway.yaml"
    write(path, config(upstream.url, price=1.0))
    admin = {"x-api-key": ADMIN_KEY}
    with ServedProcess(["--config", str(path)]) as served:
        write(path, config(upstream.url, price=1.0, keys=(TEAM_KEY, NEW_KEY)))
        answer = httpx.post(served.url + "/admin/reload", headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "reloaded"
        assert cost(served.url, NEW_KEY) > 0
        gone = httpx.post(served.url + "/v1/messages", headers={"x-api-key": OTHER_TEAM_KEY}, json=ASK)
        assert gone.status_code == 401

        broken = config(upstream.url, price=-1.0, keys=(TEAM_KEY, NEW_KEY))
        write(path, broken)
        refused = httpx.post(served.url + "/admin/reload", headers=admin)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "pricing.input' must not be negative" in error["message"]
        assert "previous one keeps serving" in error["message"]
        served.proc.send_signal(signal.SIGHUP)
        served.wait_for("reload refused, the previous config keeps serving")
        assert cost(served.url, NEW_KEY) == pytest.approx(1100 / 1e6)  # the old price, still served

        write(path, {**config(upstream.url, price=1.0, keys=(TEAM_KEY, NEW_KEY)), "shutdown_grace": 5})
        changed = httpx.post(served.url + "/admin/reload", headers=admin).json()
        assert changed["restart_needed"] == ["shutdown_grace"]
        assert httpx.post(served.url + "/admin/reload").status_code == 401  # the admin key is needed


def test_reload_under_load_fails_no_request(upstream, tmp_path):
    # Every answer is in flight for a while, so reloads land mid-request.
    body = json.dumps(completion_body("ok", usage=Usage(prompt_tokens=10, completion_tokens=5))).encode()
    upstream.default = Reply(chunks=[body], delay_first=0.05)
    path = tmp_path / "gateway.yaml"
    write(path, config(upstream.url, price=1.0))
    statuses: list[int] = []
    stop = threading.Event()
    try:
        with ServedProcess(["--config", str(path)]) as served:
            def load() -> None:
                with httpx.Client(base_url=served.url, headers={"x-api-key": TEAM_KEY}, timeout=30) as client:
                    while not stop.is_set() and len(statuses) < 2000:
                        statuses.append(client.post("/v1/messages", json=ASK).status_code)
            workers = [threading.Thread(target=load) for _ in range(6)]
            for worker in workers:
                worker.start()
            for round_ in range(6):
                time.sleep(0.25)
                write(path, config(upstream.url, price=1.0 + round_))
                served.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            stop.set()
            for worker in workers:
                worker.join(30)
            assert served.output.count("config reloaded") >= 1
    finally:
        upstream.default = None
    assert len(statuses) > 50
    assert set(statuses) == {200}


def test_every_worker_reloads_on_sighup_and_on_the_admin_route(upstream, tmp_path, redis_server,  # noqa: F811
                                                              postgres_server):  # noqa: F811
    redis_server.flush()
    path = tmp_path / "gateway.yaml"
    shared = {"redis_url": redis_server.url, "usage_db_url": postgres_server.database("reload_workers")}
    write(path, config(upstream.url, price=1.0, **shared))
    with ServedProcess(["--config", str(path), "--workers", "2"]) as served:
        wait_lines(served, "SIGHUP reloads its config", 2)
        write(path, config(upstream.url, price=10.0, **shared))
        served.proc.send_signal(signal.SIGHUP)
        wait_lines(served, "config reloaded", 2)
        # A fresh connection each time, so both workers answer some of them.
        assert {round(cost(served.url), 9) for _ in range(12)} == {round(11000 / 1e6, 9)}
        write(path, config(upstream.url, price=100.0, **shared))
        answer = httpx.post(served.url + "/admin/reload", headers={"x-api-key": ADMIN_KEY})
        assert answer.status_code == 200 and answer.json()["status"] == "reloading"
        wait_lines(served, "config reloaded", 4)
        assert {round(cost(served.url), 9) for _ in range(12)} == {round(110000 / 1e6, 9)}


def wait_lines(served: ServedProcess, text: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while served.output.count(text) < count:
        assert time.monotonic() < deadline, served.output
        time.sleep(0.05)


def test_reload_applies_a_team_limit_and_allow_list_from_the_file(upstream, tmp_path):
    path = tmp_path / "gateway.yaml"
    write(path, config(upstream.url, price=1.0))
    with ServedProcess(["--config", str(path)]) as served:
        assert [cost(served.url) > 0 for _ in range(3)] == [True, True, True]
        write(path, config(upstream.url, price=1.0, teams=[{"name": "team-a", "rpm": 1}]))
        assert httpx.post(served.url + "/admin/reload", headers={"x-api-key": ADMIN_KEY}).status_code == 200
        statuses = [httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=ASK).status_code
                    for _ in range(2)]
        assert statuses == [200, 429]
        write(path, config(upstream.url, price=1.0, teams=[{"name": "team-a", "allowed_models": ["local/other"]}],
                           models_extra=True))
        assert httpx.post(served.url + "/admin/reload", headers={"x-api-key": ADMIN_KEY}).status_code == 200
        denied = httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=ASK)
        assert denied.status_code == 403


def test_a_team_taken_out_of_the_file_loses_its_limits(upstream, tmp_path):
    path = tmp_path / "gateway.yaml"
    write(path, config(upstream.url, price=1.0, teams=[{"name": "team-a", "rpm": 1}]))
    with ServedProcess(["--config", str(path)]) as served:
        statuses = [httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=ASK).status_code
                    for _ in range(2)]
        assert statuses == [200, 429]
        write(path, config(upstream.url, price=1.0))
        assert httpx.post(served.url + "/admin/reload", headers={"x-api-key": ADMIN_KEY}).status_code == 200
        assert cost(served.url) > 0
