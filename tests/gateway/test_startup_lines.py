"""What `gateway serve` and `gateway models` tell an operator when they start."""
from __future__ import annotations

import socket
import subprocess

import yaml

from tests.fakes.base import free_port
from tests.postgres_server import postgres_server  # noqa: F401  (session fixture)
from tests.served_process import GATEWAY, ServedProcess


def test_a_taken_port_is_one_clear_line_and_exit_code_2():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(GATEWAY + ["serve", "--demo", "--port", str(port)], capture_output=True,
                                text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"gateway: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "listening on" not in result.stdout + result.stderr


def test_listening_line_comes_once_the_port_accepts_connections():
    served = ServedProcess(["--demo"], wait=False)
    try:
        served.wait_for("listening on", timeout=30)
        with socket.create_connection(("127.0.0.1", served.port), timeout=2):
            pass  # refused here would mean the line came before the socket was bound
        served.wait_healthy()
    finally:
        served.stop()


def test_startup_lines_name_the_redis_store_without_its_password_the_admin_api_and_the_providers(
        tmp_path, postgres_server):  # noqa: F811
    postgres_server.reset()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "redis_url": f"redis://gw:hunter2-secret@127.0.0.1:{free_port()}/0", "admin_key": "sk-admin-startup-1",
        "usage_db_url": postgres_server.url,
        "providers": {"anthropic": {"api_key": "sk-ant-startup-1"}}}))
    with ServedProcess(["--config", str(config)], cwd=str(tmp_path)) as served:
        served.wait_for("listening on")
        output = served.stop()
    assert f"store: redis://gw:***@127.0.0.1:" in output and "(store_outage: fail_open)" in output
    assert "admin API: on" in output
    assert "providers: amazon-bedrock, anthropic" not in output and "providers: anthropic" in output
    for secret in ("hunter2-secret", "sk-admin-startup-1", "sk-ant-startup-1"):
        assert secret not in output


def test_startup_lines_of_the_demo_say_memory_store_the_mock_providers_and_how_to_open_the_console():
    with ServedProcess(["--demo"]) as served:
        served.wait_for("listening on")
        output = served.stop()
    assert "store: memory" in output and "providers: mock, mock-fast" in output
    # The demo opens its console on sample data, with an admin key of its own.
    assert "admin API: on" in output and "/console (sample data; sign in with the demo's admin key: sk-gw-demo-admin-" in output


def test_models_lists_only_what_the_configured_providers_serve(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"providers": {"openai": {"api_key": "sk-openai-models-1"}}}))
    served = subprocess.run(GATEWAY + ["models", "--config", str(config)], capture_output=True, text=True, timeout=30)
    every = subprocess.run(GATEWAY + ["models", "--config", str(config), "--all"], capture_output=True, text=True,
                           timeout=30)
    assert served.returncode == every.returncode == 0
    assert "openai/gpt-5.4" in served.stdout and "anthropic/claude-opus-4.8" not in served.stdout
    assert "anthropic/claude-opus-4.8" in every.stdout and "openai/gpt-5.4" in every.stdout
    rows = [line for line in served.stdout.splitlines()[2:]
            if line.strip() and not line.startswith(("Prices", "* "))]  # the footnotes under the table
    assert "openai/gpt-5.5-pro" in served.stdout  # served through the Responses API
    providers = {line.split()[-6] for line in rows}
    assert providers == {"openai"}


def test_models_survives_a_reader_that_stops_early():
    process = subprocess.Popen(GATEWAY + ["models", "--all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # like `gateway models | head -0`: the reader is gone before the table is written
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 0
    assert errors == b""


def test_serve_help_documents_the_log_level_and_format():
    result = subprocess.run(GATEWAY + ["serve", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--log-level {debug,info,warning,error}" in text and "$GATEWAY_LOG_LEVEL" in text
    assert "--log-format {text,json}" in text and "$GATEWAY_LOG_FORMAT" in text and "one JSON object per line" in text
    assert "one access line per request" in text
