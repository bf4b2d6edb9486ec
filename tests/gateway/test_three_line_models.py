"""A model entry of three lines (`id`, `provider`, `upstream_model`) on an OpenAI-compatible server:
it starts, serves tools to the official SDK, passes max_tokens through, and is unpriced."""
from __future__ import annotations

import subprocess
import sys

import anthropic
import httpx
import pytest
import yaml

from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY
from tests.fakes.openai import OpenAIFake, StreamScript, ToolCall, Usage, chat_json, chat_stream
from tests.gateway.test_usage_recording import records
from tests.gateway_server import GatewayThread
from tests.redis_server import redis_server  # noqa: F401  (session fixture)
from tests.served_process import ServedProcess

BASH_TOOL = {"name": "Bash", "description": "Run a shell command",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                              "required": ["command"]}}
THREE_LINES = {"id": "local/qwen3-coder", "endpoints": [{"provider": "local", "upstream_model": "qwen3-coder"}]}


def local_config(url: str, **extra) -> dict:
    return {"providers": {"local": {"protocol": "openai", "base_url": url + "/v1"}},
            "models": [THREE_LINES], "keys": [{"key": TEAM_KEY, "team": "team-a"},
                                              {"key": OTHER_TEAM_KEY, "team": "team-b"}], **extra}


@pytest.fixture(scope="module")
def local_upstream():
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def fake(local_upstream):
    local_upstream.reset()
    return local_upstream


@pytest.fixture(scope="module")
def gw(local_upstream, redis_server, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("three-line")
    with GatewayThread(**local_config(local_upstream.url), redis_url=redis_server.url,
                       usage_db_url=f"sqlite:///{workdir / 'usage.db'}",
                       usage_spill_path=str(workdir / "spill.jsonl")) as running:
        yield running


def sdk(gw, key: str = TEAM_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def test_three_line_model_sends_tools_and_the_sdk_sees_tool_use(gw, fake):
    fake.enqueue(chat_json(None, tool_calls=[ToolCall(id="call_1", name="Bash", arguments=['{"command": "ls"}'])],
                           finish_reason="tool_calls", model="qwen3-coder"))
    message = sdk(gw).messages.create(model="local/qwen3-coder", max_tokens=300, tools=[BASH_TOOL],
                                      messages=[{"role": "user", "content": "List the files"}])
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in message.content if b.type == "tool_use"] == \
        [("tool_use", "Bash", {"command": "ls"})]
    sent = fake.chat_requests[-1]
    assert sent["model"] == "qwen3-coder"
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash"]


def test_three_line_model_streams_a_tool_call_with_tool_choice_and_sampling_kept(gw, fake):
    fake.enqueue(chat_stream(StreamScript(
        tool_calls=[ToolCall(id="call_2", name="Bash", arguments=['{"comm', 'and": "pwd"}'])],
        finish_reason="tool_calls", usage=Usage(prompt_tokens=40, completion_tokens=9))))
    with httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY}, timeout=30) as client:
        response = client.post("/v1/messages", json={
            "model": "local/qwen3-coder", "max_tokens": 200, "stream": True, "tools": [BASH_TOOL],
            "tool_choice": {"type": "any"}, "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END"],
            "messages": [{"role": "user", "content": "Where am I?"}]})
    assert response.status_code == 200
    assert "x-gateway-dropped-params" not in response.headers
    assert '"name":"Bash"' in response.text and "input_json_delta" in response.text
    sent = fake.chat_requests[-1]
    assert sent["tool_choice"] == "required"
    assert (sent["temperature"], sent["top_p"], sent["stop"]) == (0.2, 0.9, ["END"])


def test_unknown_max_output_lets_any_max_tokens_through(gw, fake):
    answer = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
        "model": "local/qwen3-coder", "max_tokens": 900_000, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    assert fake.chat_requests[-1]["max_tokens"] == 900_000


def test_unpriced_model_costs_nothing_and_its_usage_record_says_unpriced(gw, fake):
    answer = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": OTHER_TEAM_KEY}, json={
        "model": "local/qwen3-coder", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    assert answer.json()["usage"]["cost"] == 0
    [record] = [r for r in records(gw.settings.usage_db_url, "team-b", 1) if r["request_id"] == answer.headers["request-id"]]
    assert record["unpriced"] is True and record["cost_usd"] == 0
    assert record["output_tokens"] == 20


def test_models_listing_shows_the_model_as_unpriced_with_unknown_limits(gw):
    info = httpx.get(gw.url + "/v1/models/local/qwen3-coder", headers={"x-api-key": TEAM_KEY}).json()
    assert info["providers"][0]["pricing"] == "unpriced"
    assert info["context_length"] is None and info["max_output"] is None
    assert {"tools", "tool_choice", "temperature", "top_p", "stop_sequences", "images"} <= \
        set(info["supported_parameters"])


def test_budgeted_team_is_refused_unpriced_models_when_budgets_say_deny(local_upstream):
    config = local_config(local_upstream.url, budgets={"unpriced": "deny"},
                          teams=[{"name": "team-a", "budget_daily_usd": 10}])
    with GatewayThread(**config) as running:
        ask = {"model": "local/qwen3-coder", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        refused = httpx.post(running.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=ask)
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "permission_error"
        assert "budgets.unpriced: deny" in refused.json()["error"]["message"]
        # A team without a budget is not concerned.
        assert httpx.post(running.url + "/v1/messages", headers={"x-api-key": OTHER_TEAM_KEY},
                          json=ask).status_code == 200


def test_serve_starts_with_a_three_line_entry_warning_that_it_is_unpriced(local_upstream, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(local_config(local_upstream.url)))
    with ServedProcess(["--config", str(config)]) as served:
        line = served.wait_for("unpriced models")
        assert "local/qwen3-coder" in line
        answer = httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
            "model": "local/qwen3-coder", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
    table = subprocess.run([sys.executable, "-m", "gateway.cli", "models", "--config", str(config)],
                           capture_output=True, text=True, check=True).stdout
    [row] = [line for line in table.splitlines() if line.startswith("local/qwen3-coder")]
    assert "unpriced" in row
