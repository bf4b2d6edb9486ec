"""docker-compose.yml, deploy/Dockerfile and the files they mount, checked without a container runtime.

`tests/data/compose-spec.json` is the Compose file JSON Schema from compose-spec/compose-spec
(https://github.com/compose-spec/compose-spec, schema/compose-spec.json), Apache-2.0, snapshot
of 2026-06-23, copied unchanged. No container runtime works where these tests run, so the compose
file is validated against that schema, its references are followed into the repository, and the
container's health probe is run natively against a real loopback server.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.settings import ConfigError, load_settings
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
SCHEMA_FILE = REPO / "tests" / "data" / "compose-spec.json"
EXAMPLE_CONFIG = REPO / "deploy" / "gateway.yaml"


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((REPO / relative).read_text())


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored by the builder
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD."""
    start = arguments.index("[")
    value = json.loads(arguments[start:])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, or any folder above it) out of the context."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _glob_to_regex(pattern.lstrip("!").strip("/"))
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


class _HealthHandler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        code = self.status if self.path == "/healthz" else 404
        body = b'{"status":"ok"}' if code == 200 else b'{"status":"down"}'
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[_HealthHandler]]]:
    handler = type("Handler", (_HealthHandler,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def run_probe(command: list[str], port: int) -> int:
    """Run a container health probe natively, aimed at `port` instead of the container's 8080."""
    assert command[0] == "python", command
    assert any("127.0.0.1:8080/healthz" in part for part in command), command
    argv = [sys.executable] + [part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in command[1:]]
    return subprocess.run(argv, capture_output=True, timeout=20).returncode


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(load_compose())


def test_schema_rejects_a_misspelt_service_field() -> None:
    """The schema is strict enough to catch typos, so the validation above means something."""
    schema = json.loads(SCHEMA_FILE.read_text())
    compose = load_compose()
    compose["services"]["gateway"]["helthcheck"] = compose["services"]["gateway"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError, match="helthcheck"):
        jsonschema.Draft7Validator(schema).validate(compose)


def test_every_service_has_a_healthcheck() -> None:
    for name, service in load_compose()["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_services_are_gateway_redis_postgres_prometheus_and_grafana() -> None:
    services = load_compose()["services"]
    assert set(services) == {"gateway", "redis", "postgres", "prometheus", "grafana"}
    assert services["redis"]["image"].split(":")[1] == "7"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")


def test_gateway_is_built_from_deploy_dockerfile() -> None:
    build = load_compose()["services"]["gateway"]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_gateway_uses_compose_redis_and_waits_until_it_is_healthy() -> None:
    gateway = load_compose()["services"]["gateway"]
    env = gateway["environment"]
    assert env["GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"


def test_gateway_keeps_usage_in_the_compose_postgres_on_a_volume_once_it_is_healthy() -> None:
    compose = load_compose()
    gateway, postgres = compose["services"]["gateway"], compose["services"]["postgres"]
    url = gateway["environment"]["GATEWAY_USAGE_DB_URL"]
    assert re.fullmatch(r"postgresql://gateway:\$\{POSTGRES_PASSWORD:\?.+\}@postgres:5432/gateway", url)
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert postgres["image"].startswith("postgres:")
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"] and "postgres-data" in compose["volumes"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?.+\}", postgres["environment"]["POSTGRES_PASSWORD"])


def test_admin_key_comes_from_the_environment_and_has_no_default() -> None:
    env = load_compose()["services"]["gateway"]["environment"]
    assert re.fullmatch(r"\$\{GATEWAY_ADMIN_KEY:\?.+\}", env["GATEWAY_ADMIN_KEY"])


def test_gateway_reads_the_mounted_example_config() -> None:
    gateway = load_compose()["services"]["gateway"]
    config_path = gateway["environment"]["GATEWAY_CONFIG"]
    mounts = {target: source for source, target in _bind_mounts(gateway)}
    assert mounts[config_path] == "./deploy/gateway.yaml"


def test_every_mounted_file_exists_in_the_repository() -> None:
    compose = load_compose()
    named_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"


def test_prometheus_scrapes_the_gateway_metrics_on_its_exposed_port() -> None:
    compose = load_compose()
    prometheus = compose["services"]["prometheus"]
    mounted = dict(_bind_mounts(prometheus))
    assert mounted["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = load_yaml("deploy/prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway_job = jobs["gateway"]
    assert gateway_job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in gateway_job["static_configs"] for t in group["targets"]]
    exposed = [args for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()) if keyword == "EXPOSE"]
    assert targets == [f"gateway:{exposed[-1]}"]


def test_grafana_loads_the_provisioned_datasource_and_dashboards() -> None:
    grafana = load_compose()["services"]["grafana"]
    mounted = dict(_bind_mounts(grafana))
    provisioning = mounted["./deploy/grafana/provisioning"]
    assert provisioning == "/etc/grafana/provisioning"
    providers = load_yaml("deploy/grafana/provisioning/dashboards/dashboards.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == [mounted["./deploy/grafana/dashboards"]]
    datasources = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == mounted["./deploy/grafana/dashboards"] + "/gateway.json"
    assert (REPO / "deploy/grafana/dashboards/gateway.json").is_file()


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            pairs.append((source, target))
    return pairs


# --- deploy/gateway.yaml ------------------------------------------------------------------


def test_example_config_loads_with_the_compose_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_REDIS_URL", raising=False)
    monkeypatch.setenv("GATEWAY_CONFIG", str(EXAMPLE_CONFIG))
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "admin-key-for-the-test")
    monkeypatch.setenv("GATEWAY_METRICS_TOKEN", "metrics-token-for-the-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    settings = load_settings()
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.admin_key is not None and settings.admin_key.get_secret_value() == "admin-key-for-the-test"
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == "metrics-token-for-the-test"
    assert settings.providers == {"anthropic": {"api_key": "sk-ant-test"}}


@pytest.mark.parametrize("missing", ["GATEWAY_ADMIN_KEY", "GATEWAY_METRICS_TOKEN"])
def test_example_config_refuses_to_start_without_its_secrets(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(EXAMPLE_CONFIG))
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "admin-key-for-the-test")
    monkeypatch.setenv("GATEWAY_METRICS_TOKEN", "metrics-token-for-the-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError, match=missing):
        load_settings()


def _compose_env(**values: str) -> dict[str, str]:
    """What the compose gateway container's environment holds, with compose's defaults applied."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and not k.endswith("_API_KEY")}
    env.update(GATEWAY_CONFIG=str(EXAMPLE_CONFIG), GATEWAY_ADMIN_KEY="admin-key-for-the-test",
               GATEWAY_METRICS_TOKEN="metrics-token-for-the-test", ANTHROPIC_API_KEY="", GATEWAY_DEMO="false",
               GATEWAY_DEMO_KEY="")
    env.update(values)
    return env


def test_compose_without_a_provider_key_stops_naming_it_and_the_demo_switch(tmp_path: Path) -> None:
    # The compose PostgreSQL is named (as compose does) but never reached: the gateway stops first.
    env = _compose_env(GATEWAY_USAGE_DB_URL=f"postgresql://gateway:pw@127.0.0.1:{free_port()}/gateway")
    result = subprocess.run([_gateway_command(), "serve", "--port", str(free_port())], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "providers.anthropic.api_key is empty" in result.stderr and "GATEWAY_DEMO=1" in result.stderr


def test_compose_defaults_let_the_demo_run_without_a_provider_key() -> None:
    env = load_compose()["services"]["gateway"]["environment"]
    assert env["ANTHROPIC_API_KEY"] == "${ANTHROPIC_API_KEY:-}"
    assert env["GATEWAY_DEMO"] == "${GATEWAY_DEMO:-false}"
    assert env["GATEWAY_DEMO_KEY"] == "${GATEWAY_DEMO_KEY:-}"


def test_metrics_are_not_published_without_protection() -> None:
    """The gateway's port is published on every interface, so /metrics needs a token that the
    compose file requires, hands to Prometheus as a secret, and Prometheus sends as Bearer."""
    compose = load_compose()
    gateway, prometheus = compose["services"]["gateway"], compose["services"]["prometheus"]
    assert any(not port.startswith("127.0.0.1:") for port in gateway["ports"])
    assert re.fullmatch(r"\$\{GATEWAY_METRICS_TOKEN:\?.+\}", gateway["environment"]["GATEWAY_METRICS_TOKEN"])
    assert yaml.safe_load(EXAMPLE_CONFIG.read_text())["metrics_token"] == "${GATEWAY_METRICS_TOKEN}"
    secret = compose["secrets"]["metrics_token"]
    assert secret == {"environment": "GATEWAY_METRICS_TOKEN"}
    assert "metrics_token" in prometheus["secrets"]
    job = {j["job_name"]: j for j in load_yaml("deploy/prometheus.yml")["scrape_configs"]}["gateway"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}


def test_compose_passes_every_secret_the_example_config_reads() -> None:
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)\}", _uncommented(EXAMPLE_CONFIG.read_text())))
    env = load_compose()["services"]["gateway"]["environment"]
    for name in needed:
        assert re.fullmatch(rf"\$\{{{name}:\?.+\}}", env.get(name, "")), f"{name} is not required by compose"


def _uncommented(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_example_config_holds_no_literal_secret() -> None:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert config["admin_key"].startswith("${")
    for name, provider in config["providers"].items():
        assert provider["api_key"].startswith("${"), f"provider {name} has a literal key"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _get_with(url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_healthy(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gateway did not come up:\n{log.read_text()[-3000:]}")


def test_compose_demo_answers_with_the_mock_providers_and_no_provider_key(tmp_path: Path) -> None:
    with RedisServer() as redis_server, PostgresServer() as postgres:
        port = free_port()
        env = _compose_env(GATEWAY_REDIS_URL=redis_server.url, GATEWAY_USAGE_DB_URL=postgres.url, GATEWAY_DEMO="1",
                           GATEWAY_DEMO_KEY="sk-demo-compose-1")
        log = tmp_path / "gateway.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([_gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                       env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(port, process, log)
            body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 20,
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
            status, answer = _get_with(f"http://127.0.0.1:{port}/v1/messages",
                                       {"x-api-key": "sk-demo-compose-1", "content-type": "application/json",
                                        "anthropic-version": "2023-06-01"}, body)
            assert status == 200, answer
            assert json.loads(answer)["provider"] in ("mock", "mock-fast")
        finally:
            process.terminate()
            process.wait(15)


def _gateway_command() -> str:
    beside = Path(sys.executable).with_name("gateway")
    return str(beside) if beside.is_file() else (shutil.which("gateway") or "gateway")


def test_gateway_serves_the_example_config_with_redis_behind_the_container_probe(tmp_path: Path) -> None:
    """What the compose gateway container runs, run natively: the console script, the example
    config, Redis from GATEWAY_REDIS_URL, PostgreSQL from GATEWAY_USAGE_DB_URL, the admin key from
    the environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GATEWAY_") and not k.endswith("_API_KEY")}
    with RedisServer() as redis_server, PostgresServer() as postgres:
        port = free_port()
        env.update(GATEWAY_CONFIG=str(EXAMPLE_CONFIG), GATEWAY_REDIS_URL=redis_server.url,
                   GATEWAY_USAGE_DB_URL=postgres.url,
                   GATEWAY_ADMIN_KEY="admin-key-for-the-test", ANTHROPIC_API_KEY="sk-ant-unused-here",
                   GATEWAY_METRICS_TOKEN="metrics-token-for-the-test")
        log = tmp_path / "gateway.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([_gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                       env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            status = 0
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    status, _ = _get(f"http://127.0.0.1:{port}/healthz")
                except OSError:
                    status = 0
                if status == 200:
                    break
                time.sleep(0.1)
            assert status == 200, f"gateway did not come up:\n{log.read_text()[-3000:]}"
            probe = exec_form(dict(final_stage(dockerfile_instructions(DOCKERFILE.read_text())))["HEALTHCHECK"])
            assert run_probe(probe, port) == 0
            ready, body = _get(f"http://127.0.0.1:{port}/readyz")
            assert ready == 200 and b"degraded" not in body, body
            assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 401
            status, metrics = _get_with(f"http://127.0.0.1:{port}/metrics",
                                        {"authorization": "Bearer metrics-token-for-the-test"})
            assert status == 200 and b"gateway_inflight_requests" in metrics
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# --- deploy/Dockerfile --------------------------------------------------------------------


def test_dockerfile_builds_on_python_311_slim() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    stages = {args.split()[2] for keyword, args in instructions if keyword == "FROM" and " AS " in args.upper()}
    assert bases and all(base == "python:3.11-slim" or base in stages for base in bases)


def test_dockerfile_installs_the_project_without_dev_dependencies() -> None:
    runs = [args for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()) if keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs, "no pip install"
    for run in installs:
        assert re.search(r"pip install( --?[\w-]+)* \.$", run), run
        assert "[test]" not in run and " -e " not in run


def test_dockerfile_copies_only_what_is_in_the_build_context() -> None:
    for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _destination = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_tests_and_git_out_of_the_image() -> None:
    assert dockerignore_excludes(".git/config")
    assert dockerignore_excludes("tests/deploy/test_compose.py")
    assert dockerignore_excludes("gateway/__pycache__/app.cpython-311.pyc")
    assert not dockerignore_excludes("gateway/app.py")


def test_image_runs_the_console_script_as_a_non_root_user_on_port_8080() -> None:
    stage = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    keywords = dict(stage)
    assert exec_form(keywords["CMD"]) == ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert keywords["EXPOSE"] == "8080"
    user = keywords["USER"].split(":")[0]
    assert user not in ("root", "0")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gateway"] == "gateway.cli:main"


def test_image_health_probe_passes_on_healthz_200_and_fails_otherwise(health_server) -> None:
    server, handler = health_server
    stage = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    probe = exec_form(dict(stage)["HEALTHCHECK"])
    port = server.server_address[1]
    assert run_probe(probe, port) == 0
    handler.status = 503
    assert run_probe(probe, port) != 0


def test_compose_gateway_probe_passes_on_healthz_200_and_fails_otherwise(health_server) -> None:
    server, handler = health_server
    test = load_compose()["services"]["gateway"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    port = server.server_address[1]
    assert run_probe(test[1:], port) == 0
    server.shutdown()
    server.server_close()
    assert run_probe(test[1:], port) != 0, "nothing listens: the probe must fail"


def test_prometheus_with_the_deploy_config_scrapes_a_token_guarded_gateway(tmp_path: Path) -> None:
    """deploy/prometheus.yml's gateway job, run by a real Prometheus: with the compose secret's file
    it is up; the same job without the token is refused."""
    from tests.fakes.base import wait_for
    from tests.gateway_server import GatewayThread

    job = {j["job_name"]: j for j in load_yaml("deploy/prometheus.yml")["scrape_configs"]}["gateway"]
    secret = tmp_path / "metrics_token"  # what compose mounts at /run/secrets/metrics_token
    secret.write_text("metrics-token-for-prometheus\n")
    with GatewayThread(demo=True, demo_key="sk-demo-prometheus-1", metrics_token="metrics-token-for-prometheus") as gw:
        target = [f"127.0.0.1:{gw.port}"]
        guarded = {**job, "static_configs": [{"targets": target}],
                   "authorization": {**job["authorization"], "credentials_file": str(secret)}}
        bare = {"job_name": "gateway-without-token", "metrics_path": job["metrics_path"],
                "static_configs": [{"targets": target}]}
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [guarded, bare]}))
        port = free_port()
        proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> dict[str, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query=up", timeout=2) as answer:
                    results = json.loads(answer.read())["data"]["result"]
            except (OSError, ValueError, KeyError):
                return {}
            return {r["metric"]["job"]: r["value"][1] for r in results}

        try:
            assert wait_for(lambda: up() == {"gateway": "1", "gateway-without-token": "0"}, timeout=30,
                            interval=0.3), up()
        finally:
            proc.terminate()
            proc.wait(10)
