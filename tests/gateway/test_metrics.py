"""/metrics after real traffic: every name and label the dashboard queries exists, and a real Prometheus
server scrapes the gateway and answers a dashboard query."""
from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from gateway.metrics import LATENCY_BUCKETS, observe_all

from tests.conftest import TEAM_KEY, base_settings
from tests.deploy.dashboard import dashboard_queries, metric_names_and_labels
from tests.fakes.anthropic import error_reply, json_reply, message_body, sse_reply, stream_events
from tests.fakes.base import free_port, wait_for
from tests.gateway_server import GatewayThread

LIMITED_KEY = "sk-test-limited-0003"
HI = {"model": "anthropic/claude-sonnet-4.5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def traffic_gateway(anthropic_upstream):
    settings = base_settings(anthropic_upstream.url, teams=[{"name": "team-limited", "rpm": 1}])
    settings["keys"].append({"key": LIMITED_KEY, "team": "team-limited"})
    with GatewayThread(**settings) as gw:
        anthropic_upstream.reset()
        headers = {"x-api-key": TEAM_KEY}
        anthropic_upstream.enqueue(json_reply(message_body(input_tokens=50, output_tokens=7, cache_read=30,
                                                           cache_write=20)))
        assert httpx.post(gw.url + "/v1/messages", headers=headers, json=HI).status_code == 200
        anthropic_upstream.enqueue(sse_reply(stream_events(["a", "b"])))
        assert httpx.post(gw.url + "/v1/messages", headers=headers, json={**HI, "stream": True}).status_code == 200
        anthropic_upstream.enqueue(error_reply(500, "api_error", "boom"))
        assert httpx.post(gw.url + "/v1/messages", headers=headers, json=HI).status_code == 502
        # a fallback: the primary fails, the listed fallback model serves
        anthropic_upstream.enqueue(error_reply(529, "overloaded_error", "busy"))
        fallback = httpx.post(gw.url + "/v1/messages", headers=headers,
                              json={**HI, "models": ["anthropic/claude-haiku-4.5"]})
        assert fallback.status_code == 200
        limited = [httpx.post(gw.url + "/v1/messages", headers={"x-api-key": LIMITED_KEY}, json=HI).status_code
                   for _ in range(2)]
        assert limited == [200, 429]
        yield gw


def scrape(gw) -> dict[str, list[dict]]:
    samples: dict[str, list[dict]] = {}
    text = httpx.get(gw.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


def test_every_metric_and_label_of_the_dashboard_is_exposed(traffic_gateway):
    def complete() -> bool:
        found = scrape(traffic_gateway)
        return all(name in found and any(labels <= set(s) for s in found[name])
                   for query in dashboard_queries() for name, labels in metric_names_and_labels(query))
    assert wait_for(complete, timeout=5, interval=0.1)
    found = scrape(traffic_gateway)
    missing = [(name, sorted(labels)) for query in dashboard_queries()
               for name, labels in metric_names_and_labels(query)
               if name not in found or not any(labels <= set(s) for s in found[name])]
    assert missing == []


def test_metrics_never_carry_keys_or_users(traffic_gateway):
    text = httpx.get(traffic_gateway.url + "/metrics").text
    assert TEAM_KEY not in text and "sk-upstream" not in text
    for line in text.splitlines():
        if line.startswith("gateway_") and "{" in line:
            labels = line[line.index("{") + 1:line.index("}")]
            names = {pair.split("=")[0] for pair in labels.split(",") if pair}
            # The registry is the process's: "bound" (buffer or memory) shows once any gateway of
            # this process spilled a usage record, as one of another test file may have.
            assert names <= {"team", "model", "provider", "status", "kind", "outcome", "reason", "backend", "bound",
                             "le"}


def test_token_counters_count_each_kind(traffic_gateway):
    text = httpx.get(traffic_gateway.url + "/metrics").text
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gateway_tokens_total" and s.labels.get("team") == "team-a":
                values[s.labels["kind"]] = values.get(s.labels["kind"], 0) + s.value
    assert values["cache_read"] >= 30 and values["cache_write"] >= 20 and values["output"] >= 7


def dashboard_query(containing: str) -> str:
    """A query of the dashboard, with Grafana's variables set as an unfiltered dashboard sets them."""
    query = next(q for q in dashboard_queries() if containing in q)
    return (query.replace('"$team"', '".*"').replace('"$model"', '".*"').replace('"$provider"', '".*"')
            .replace("$__range", "1h").replace("$__rate_interval", "1m"))


def test_a_real_prometheus_scrapes_the_gateway_and_answers_a_dashboard_query(traffic_gateway, anthropic_upstream,
                                                                             tmp_path):
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{traffic_gateway.port}']}}]\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ask(query: str) -> list:
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=2).json()
        except (httpx.HTTPError, json.JSONDecodeError):
            return []
        return body.get("data", {}).get("result", [])

    try:
        assert wait_for(lambda: any(r["value"][1] == "1" for r in ask("up")), timeout=30, interval=0.3)
        time.sleep(1.5)  # a second scrape, so that increase() has a baseline
        anthropic_upstream.enqueue(json_reply(message_body(input_tokens=100000, output_tokens=1000)))
        assert httpx.post(traffic_gateway.url + "/v1/messages", headers={"x-api-key": TEAM_KEY},
                          json=HI).status_code == 200
        query = dashboard_query("sum by (team) (increase(gateway_cost_usd_total")
        result: list = []

        def answered() -> bool:
            result[:] = ask(query)
            return any(r["metric"].get("team") == "team-a" and float(r["value"][1]) > 0 for r in result)
        assert wait_for(answered, timeout=30, interval=0.5), result
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_batch_of_observations_fills_a_histogram_as_observing_them_one_by_one_does():
    values = [0.0, 0.01, 0.025, 0.0250001, 0.3, 0.3, 5, 599.9, 600, 601, 10_000]
    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "h", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
    batched = Histogram("batched", "h", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
    for value in values:
        one_by_one.labels("m").observe(value)
    observe_all(batched.labels("m"), values)

    def samples(name: str) -> list[tuple[str, dict, float]]:
        [family] = [f for f in registry.collect() if f.name == name]
        return [(s.name.removeprefix(name), s.labels, s.value) for s in family.samples if not s.name.endswith("_created")]
    assert samples("batched") == samples("one_by_one")
    assert ("_bucket", {"model": "m", "le": "0.025"}, 3.0) in samples("batched")  # 0.025 counts as <= 0.025


def test_a_batch_of_records_counts_each_request_its_tokens_cost_attempts_and_latencies():
    def record(team: str, model: str, status: int, tokens: tuple[int, int, int, int], cost: float, latency_ms: float,
               attempts: list[dict], limited_by: str | None = None) -> dict:
        return {"team": team, "model": model, "provider": "prov-b", "status": status, "input_tokens": tokens[0],
                "output_tokens": tokens[1], "cache_read_input_tokens": tokens[2],
                "cache_creation_input_tokens": tokens[3], "cost_usd": cost, "latency_ms": latency_ms,
                "ttft_ms": latency_ms / 2, "attempts": attempts, "limited_by": limited_by}
    ok = {"provider": "prov-b", "model": "m-b", "outcome": "ok"}
    failed = {"provider": "prov-b", "model": "m-b", "outcome": "500"}
    batch = [record("team-b1", "m-b", 200, (10, 5, 0, 3), 0.25, 40.0, [ok]),
             record("team-b1", "m-b", 200, (1, 2, 7, 0), 0.5, 300.0, [failed, ok]),
             record("team-b2", "m-b", 429, (0, 0, 0, 0), 0.0, 2.0, [], limited_by="rpm")]

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0
    names = [("gateway_requests_total", {"team": "team-b1", "model": "m-b", "provider": "prov-b", "status": "200"}),
             ("gateway_requests_total", {"team": "team-b2", "model": "m-b", "provider": "prov-b", "status": "429"}),
             *[("gateway_tokens_total", {"team": "team-b1", "model": "m-b", "provider": "prov-b", "kind": kind})
               for kind in ("input", "output", "cache_read", "cache_write")],
             ("gateway_tokens_total", {"team": "team-b2", "model": "m-b", "provider": "prov-b", "kind": "input"}),
             ("gateway_cost_usd_total", {"team": "team-b1", "model": "m-b", "provider": "prov-b"}),
             ("gateway_upstream_attempts_total", {"provider": "prov-b", "outcome": "ok"}),
             ("gateway_upstream_attempts_total", {"provider": "prov-b", "outcome": "500"}),
             ("gateway_fallbacks_total", {"model": "m-b"}),
             ("gateway_rate_limited_total", {"team": "team-b2", "reason": "rpm"}),
             ("gateway_request_duration_seconds_count", {"model": "m-b", "provider": "prov-b"}),
             ("gateway_request_duration_seconds_sum", {"model": "m-b", "provider": "prov-b"}),
             ("gateway_request_duration_seconds_bucket", {"model": "m-b", "provider": "prov-b", "le": "0.05"}),
             ("gateway_time_to_first_token_seconds_count", {"model": "m-b", "provider": "prov-b"})]
    before = [value(name, **labels) for name, labels in names]
    metrics.observe(batch)
    added = [round(value(name, **labels) - b, 9) for (name, labels), b in zip(names, before)]
    assert added == [2, 1, 11, 7, 7, 3, 0, 0.75, 2, 1, 1, 1, 3, 0.342, 2, 3]
