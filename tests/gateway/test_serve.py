"""`gateway serve` as a user runs it: config file, environment, exit codes, the offline demo, the SDK."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import anthropic
import httpx
import pytest

from tests.fakes.base import free_port

GATEWAY = [sys.executable, "-m", "gateway.cli"]


def run_gateway(args: list[str], env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(GATEWAY + args, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


class Served:
    """`gateway serve` in a child process, stopped at the end."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(GATEWAY + ["serve", "--port", str(self.port)] + args,
                                     env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise RuntimeError("gateway did not start: " + (self.proc.stdout.read() or ""))
            time.sleep(0.05)

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=20)
        return out


@pytest.fixture(scope="module")
def demo():
    served = Served(["--demo"], env={"GATEWAY_DEMO_KEY": "sk-demo-test-key-1"})
    yield served
    served.stop()


def sdk(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)


def test_demo_answers_the_official_sdk(demo):
    message = sdk(demo.url, "sk-demo-test-key-1").messages.create(
        model="claude-opus-4-8", max_tokens=200, messages=[{"role": "user", "content": "Hello there"}])
    assert message.model == "anthropic/claude-opus-4.8"
    assert message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.provider in ("mock", "mock-fast")  # the demo balances over two mock providers


def test_demo_streams_to_the_official_sdk_with_usage_in_the_final_message(demo):
    with sdk(demo.url, "sk-demo-test-key-1").messages.stream(
            model="claude-sonnet-4-6", max_tokens=200,
            messages=[{"role": "user", "content": "Stream please"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Stream please" in text
    assert final.content[0].text == text
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    assert final.model == "anthropic/claude-sonnet-4.6"


def test_demo_reports_cache_reads_for_cached_prompts(demo):
    system = [{"type": "text", "text": "policy " * 400, "cache_control": {"type": "ephemeral"}}]
    message = sdk(demo.url, "sk-demo-test-key-1").messages.create(
        model="claude-haiku-4-5", max_tokens=50, system=system, messages=[{"role": "user", "content": "hi"}])
    assert message.usage.cache_read_input_tokens > 0


def test_demo_rejects_other_keys(demo):
    with pytest.raises(anthropic.AuthenticationError):
        sdk(demo.url, "sk-wrong-key-123").messages.create(model="claude-opus-4-8", max_tokens=5,
                                                          messages=[{"role": "user", "content": "x"}])


def test_health_and_readiness(demo):
    assert httpx.get(demo.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(demo.url + "/readyz")
    assert ready.status_code == 200


def test_startup_log_names_providers_and_models_but_no_secret(tmp_path, anthropic_upstream):
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers:\n"
        f"  anthropic: {{base_url: '{anthropic_upstream.url}', api_key: '${{UPSTREAM_KEY}}'}}\n"
        "keys:\n  - {key: '${TEAM_KEY}', team: team-a}\n")
    served = Served(["--config", str(config)], env={"UPSTREAM_KEY": "sk-ant-very-secret-1",
                                                   "TEAM_KEY": "sk-team-secret-99"})
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": "sk-team-secret-99"},
                          json={"model": "claude-haiku-4-5", "max_tokens": 5,
                                "messages": [{"role": "user", "content": "hi"}]})
    output = served.stop()
    assert response.status_code == 200
    assert anthropic_upstream.requests[-1].headers["x-api-key"] == "sk-ant-very-secret-1"
    assert "anthropic" in output and "anthropic/claude-haiku-4.5" in output
    assert "sk-ant-very-secret-1" not in output and "sk-team-secret-99" not in output


def test_invalid_config_exits_2_naming_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("port: not-a-port\n")
    result = run_gateway(["serve", "--config", str(config)])
    assert result.returncode == 2
    assert "port" in result.stderr


def test_unset_variable_exits_2_naming_it(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("admin_key: ${SURELY_UNSET_VARIABLE_X}\n")
    result = run_gateway(["serve", "--config", str(config)], env={})
    assert result.returncode == 2
    assert "SURELY_UNSET_VARIABLE_X" in result.stderr


def test_variable_default_is_used(tmp_path):
    from gateway.settings import expand_env
    assert expand_env({"a": "${NOPE_X:-fallback}"}, env={}) == {"a": "fallback"}


def test_bad_catalog_override_exits_2_naming_the_entry(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  - id: acme/m1\n    display_name: M1\n    context_length: 8000\n"
                      "    max_output: 1000\n    endpoints:\n      - {provider: nowhere, upstream_model: m1,"
                      " pricing: {input: 1, output: 2}}\n")
    result = run_gateway(["serve", "--config", str(config)])
    assert result.returncode == 2
    assert "nowhere" in result.stderr


def test_environment_overrides_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("port: 9000\n")
    os.environ["GATEWAY_CONFIG"] = str(config)
    os.environ["GATEWAY_PORT"] = "9100"
    try:
        from gateway.settings import load_settings
        assert load_settings().port == 9100
    finally:
        del os.environ["GATEWAY_CONFIG"], os.environ["GATEWAY_PORT"]


def test_more_than_one_worker_without_redis_is_refused():
    result = run_gateway(["serve", "--demo", "--workers", "2"])
    assert result.returncode == 2
    assert "redis" in result.stderr.lower()


def test_models_command_prints_the_catalog():
    result = run_gateway(["models"])
    assert result.returncode == 0
    assert "anthropic/claude-opus-4.8" in result.stdout and "claude-opus-4-8" in result.stdout


def test_sdk_lists_models_page_by_page(demo):
    client = sdk(demo.url, "sk-demo-test-key-1")
    first = client.models.list(limit=5)
    assert len(first.data) == 5 and first.has_more
    every = [m.id for m in client.models.list(limit=5)]  # the SDK follows after_id page by page
    assert len(every) == len(set(every)) >= 17
    assert "anthropic/claude-opus-4.8" in every
    back = client.models.list(limit=3, before_id=every[5])
    assert [m.id for m in back.data] == every[2:5]
    assert client.models.retrieve("claude-opus-4-8").id == "anthropic/claude-opus-4.8"


def test_sdk_counts_tokens_locally_for_the_mock_provider(demo):
    client = sdk(demo.url, "sk-demo-test-key-1")
    short = client.messages.count_tokens(model="openai/gpt-5.4", messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(model="openai/gpt-5.4",
                                        messages=[{"role": "user", "content": "word " * 400}])
    assert 0 < short.input_tokens < long.input_tokens


def test_count_tokens_is_forwarded_to_an_anthropic_endpoint(gateway, upstream):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-test-team-a-0001", max_retries=0)
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}],
                                           extra_body={"provider": {"sort": "price"}})
    assert counted.input_tokens == 10  # the fake's answer, not a local estimate
    received = upstream.requests[-1]
    assert received.path == "/v1/messages/count_tokens"
    assert received.json()["model"] == "claude-sonnet-4-5-20250929" and "provider" not in received.json()
