"""What an operator reads in `gateway serve`'s output: one access line per request (text or JSON),
refused requests counted in /metrics, a Redis outage reported once per interval, workers included."""
from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway import logs
from tests.conftest import TEAM_KEY
from tests.fakes.base import wait_for
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.redis_server import RedisServer
from tests.served_process import ServedProcess

UPSTREAM_KEY = "sk-upstream-secret-access-log"
PROMPT = "confidential prompt words"
HI = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": PROMPT}]}


def write_config(tmp_path: Path, upstream_url: str, **extra) -> Path:
    config = {"providers": {"anthropic": {"base_url": upstream_url, "api_key": UPSTREAM_KEY}},
              "keys": [{"key": TEAM_KEY, "team": "team-a"}], **extra}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def text_gateway(tmp_path, upstream):
    with ServedProcess(["--config", str(write_config(tmp_path, upstream.url))]) as served:
        yield served


def post(served: ServedProcess, body: dict, key: str | None = TEAM_KEY) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    return httpx.post(served.url + "/v1/messages", json=body, headers=headers, timeout=10)


def test_each_request_gets_one_access_line_naming_route_status_team_key_model_provider_and_attempts(text_gateway):
    ok = post(text_gateway, HI)
    assert ok.status_code == 200
    line = text_gateway.wait_for(ok.headers["request-id"])
    assert "INFO gateway.access: POST /v1/messages 200 " in line
    assert "team=team-a" in line and "key=key_" in line
    assert "model=anthropic/claude-haiku-4.5" in line and "provider=anthropic" in line
    assert "attempts=anthropic/anthropic/claude-haiku-4.5=ok" in line
    assert text_gateway.output.count(ok.headers["request-id"]) == 1


def test_requests_refused_before_a_key_is_known_get_an_access_line_too(text_gateway):
    missing = post(text_gateway, HI, key=None)
    unknown = post(text_gateway, HI, key="sk-not-a-key-at-all")
    assert missing.status_code == unknown.status_code == 401
    for response in (missing, unknown):
        line = text_gateway.wait_for(response.headers["request-id"])
        assert "POST /v1/messages 401 " in line and "team=-" in line


def test_other_routes_get_an_access_line_with_their_status(text_gateway):
    models = httpx.get(text_gateway.url + "/v1/models", headers={"x-api-key": TEAM_KEY})
    assert models.status_code == 200
    text_gateway.wait_for(lambda line: "gateway.access: GET /v1/models 200 " in line)
    text_gateway.wait_for(lambda line: "gateway.access: GET /healthz 200 " in line)


def test_access_lines_hold_no_prompt_and_no_key(text_gateway):
    answered = post(text_gateway, HI)
    refused = post(text_gateway, HI, key="sk-wrong-secret-key-77")
    text_gateway.wait_for(answered.headers["request-id"])
    text_gateway.wait_for(refused.headers["request-id"])
    output = text_gateway.output
    for secret in (PROMPT, TEAM_KEY, UPSTREAM_KEY, "sk-wrong-secret-key-77"):
        assert secret not in output


def test_json_log_format_writes_one_json_object_per_line(tmp_path, upstream):
    config = write_config(tmp_path, upstream.url)
    with ServedProcess(["--config", str(config)], env={"GATEWAY_LOG_FORMAT": "json"}) as served:
        ok = post(served, HI)
        refused = post(served, HI, key=None)
        served.wait_for(refused.headers["request-id"])
        served.wait_for(ok.headers["request-id"])
        output = served.stop()
    entries = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object
    access = {e["request_id"]: e for e in entries if e["logger"] == "gateway.access"}
    entry = access[ok.headers["request-id"]]
    assert entry["level"] == "info" and entry["method"] == "POST" and entry["path"] == "/v1/messages"
    assert entry["status"] == 200 and entry["team"] == "team-a" and entry["key_id"].startswith("key_")
    assert entry["model"] == "anthropic/claude-haiku-4.5" and entry["provider"] == "anthropic"
    assert entry["attempts"] == "anthropic/anthropic/claude-haiku-4.5=ok" and entry["duration_ms"] > 0
    assert access[refused.headers["request-id"]]["status"] == 401
    assert any(e["logger"] == "gateway" and e["message"].startswith("listening on") for e in entries)


def test_json_log_format_of_the_demo_keeps_every_line_json_the_demo_key_included():
    with ServedProcess(["--demo", "--log-format", "json"]) as served:
        served.wait_for("listening on")
        output = served.stop()
    entries = [json.loads(line) for line in output.splitlines()]
    assert any(e["message"].startswith("demo key: sk-gw-demo-") for e in entries)


def test_log_level_warning_leaves_out_access_lines(tmp_path, upstream):
    config = write_config(tmp_path, upstream.url)
    with ServedProcess(["--config", str(config), "--log-level", "warning"]) as served:
        ok = post(served, HI)
        assert ok.status_code == 200
        output = served.stop()
    assert ok.headers["request-id"] not in output and "gateway.access" not in output


def requests_counted(metrics_text: str, status: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "gateway_requests_total" and sample.labels["status"] == status:
                total += sample.value
    return total


def test_refused_requests_are_counted_in_metrics_with_their_status(text_gateway):
    for key in (None, "sk-not-a-key-at-all", None):
        assert post(text_gateway, HI, key=key).status_code == 401
    assert post(text_gateway, {"model": "no/such-model", "max_tokens": 5,
                               "messages": [{"role": "user", "content": "x"}]}).status_code == 404
    assert wait_for(lambda: requests_counted(httpx.get(text_gateway.url + "/metrics").text, "401") == 3)
    assert requests_counted(httpx.get(text_gateway.url + "/metrics").text, "404") == 1


def test_an_unreachable_redis_is_reported_once_per_interval_not_once_per_request(tmp_path, upstream,
                                                                                 postgres_server):  # noqa: F811
    postgres_server.reset()
    with RedisServer() as redis_server:
        config = write_config(tmp_path, upstream.url, redis_url=redis_server.url, store_timeout=0.2,
                              usage_db_url=postgres_server.url,
                              usage_spill_path=str(tmp_path / "spill.jsonl"))
        with ServedProcess(["--config", str(config)], cwd=str(tmp_path)) as served:
            assert post(served, HI).status_code == 200
            redis_server.stop()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: post(served, HI).status_code, range(40)))
            assert answers == [200] * 40  # fail_open: a key from the config file keeps working
            served.wait_for("admission: the store is unreachable")
            served.wait_for("usage: writing to the store failed")
            redis_server.start()
            assert post(served, HI).status_code == 200
            served.wait_for("admission: the store is unreachable; admitting without limits (fail_open): recovered")
            output = served.stop()
    warnings = [line for line in output.splitlines() if " WARNING " in line]
    assert sum("admission: the store is unreachable; admitting without limits (fail_open): " in w
               for w in warnings) == 1, output
    assert sum("usage: writing to the store failed; records wait in the spill file: " in w for w in warnings) == 1
    assert "Traceback" not in output


def test_workers_access_lines_reach_the_parent_output_and_no_metrics_folder_stays(tmp_path, upstream,
                                                                                  postgres_server):  # noqa: F811
    postgres_server.reset()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with RedisServer() as redis_server:
        config = write_config(tmp_path, upstream.url, redis_url=redis_server.url,
                              usage_db_url=postgres_server.url)
        with ServedProcess(["--config", str(config), "--workers", "2"], env={"TMPDIR": str(scratch)},
                           cwd=str(tmp_path)) as served:
            assert list(scratch.glob("gateway-metrics-*")), "the workers share a metrics folder while they run"
            ids = [post(served, HI).headers["request-id"] for _ in range(6)]
            for request_id in ids:
                served.wait_for(request_id)
            output = served.stop()
    assert "listening on http://127.0.0.1" in output and "(2 workers)" in output
    assert sum("gateway.access: POST /v1/messages 200" in line for line in output.splitlines()) == 6
    assert not list(scratch.glob("gateway-metrics-*"))


def test_uvicorn_formats_no_access_line_of_its_own():
    """uvicorn's protocol formats its access line's arguments for every answer whenever its access
    logger has a handler anywhere up the tree (it asks `hasHandlers()`); the gateway writes its own."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers),
                    logging.getLogger(name).propagate) for name in names}
    logs.setup("debug", "text", io.StringIO())
    try:
        assert not logging.getLogger("uvicorn.access").hasHandlers()
        assert logging.getLogger("uvicorn.error").hasHandlers()  # uvicorn's errors still reach the log
    finally:  # this process's other tests see logging as it was
        for name, (level, handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
