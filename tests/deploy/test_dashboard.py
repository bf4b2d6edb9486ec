"""The Grafana dashboard: it parses, every panel queries the provisioned Prometheus, every gateway
metric is on it, every metric and label it reads is on a running gateway's /metrics, and the
scanner of its queries (tests/deploy/dashboard.py) reads them right."""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.dashboard import DASHBOARD_PATH, dashboard_queries, metric_names_and_labels
from tests.fakes.anthropic import error_reply, json_reply, message_body
from tests.gateway_server import GatewayThread

REPO = Path(__file__).resolve().parents[2]
DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# The gateway's metric contract; histograms are read through their _bucket series.
GATEWAY_METRICS = {
    "gateway_requests_total",
    "gateway_tokens_total",
    "gateway_cost_usd_total",
    "gateway_request_duration_seconds_bucket",
    "gateway_time_to_first_token_seconds_bucket",
    "gateway_upstream_attempts_total",
    "gateway_fallbacks_total",
    "gateway_rate_limited_total",
    "gateway_inflight_requests",
}
GATEWAY_LABELS = {"team", "model", "provider", "status", "kind", "outcome", "reason", "le"}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_PATH.read_text())


def query_panels() -> list[dict[str, Any]]:
    return [p for p in load_dashboard()["panels"] if p["type"] != "row"]


def provisioned_uid() -> str:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    return datasource["uid"]


def panel_by_title(title: str) -> dict[str, Any]:
    (panel,) = [p for p in query_panels() if p["title"] == title]
    return panel


def exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel["targets"]]


def test_dashboard_is_a_grafana_dashboard_with_a_stable_uid() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "llm-gateway"
    assert dashboard["title"]


def test_every_panel_has_a_query() -> None:
    for panel in query_panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']}: empty query"
            assert target["refId"]


def test_panels_and_variables_use_the_provisioned_datasource() -> None:
    uid = provisioned_uid()
    dashboard = load_dashboard()
    for panel in query_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    ids = [p["id"] for p in load_dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in load_dashboard()["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_gateway_metric_is_on_the_dashboard() -> None:
    used = {name for q in dashboard_queries() for name, _ in metric_names_and_labels(q)}
    assert GATEWAY_METRICS <= used, f"missing: {GATEWAY_METRICS - used}"
    assert used <= GATEWAY_METRICS, f"not a gateway metric: {used - GATEWAY_METRICS}"


def test_queries_only_use_the_gateways_labels() -> None:
    for query in dashboard_queries():
        for name, labels in metric_names_and_labels(query):
            assert labels <= GATEWAY_LABELS, f"{name} in {query!r}: {labels - GATEWAY_LABELS}"


def test_spend_is_shown_per_team_per_model_and_per_day() -> None:
    per_team = exprs(panel_by_title("Spend per team"))[0]
    per_model = exprs(panel_by_title("Spend per model"))[0]
    per_day = panel_by_title("Spend per day")
    assert "sum by (team) (increase(gateway_cost_usd_total" in per_team
    assert "sum by (model) (increase(gateway_cost_usd_total" in per_model
    assert "increase(gateway_cost_usd_total" in exprs(per_day)[0] and "[1d]" in exprs(per_day)[0]
    assert per_day["interval"] == "1d"
    for panel in ("Spend per team", "Spend per model", "Spend per day", "Spend in range"):
        assert panel_by_title(panel)["fieldConfig"]["defaults"]["unit"] == "currencyUSD"


def test_cache_hit_ratio_is_cache_reads_over_all_input_tokens() -> None:
    (ratio,) = exprs(panel_by_title("Cache hit ratio"))
    numerator, denominator = ratio.split(" / ")
    assert 'kind="cache_read"' in numerator
    assert 'kind=~"input|cache_read|cache_write"' in denominator
    assert panel_by_title("Cache hit ratio")["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_errors_are_broken_down_by_http_status() -> None:
    (errors,) = exprs(panel_by_title("Errors by status"))
    assert errors.startswith("sum by (status) (rate(gateway_requests_total{")
    assert 'status=~"[45].."' in errors


@pytest.mark.parametrize("title, bucket", [
    ("Request duration", "gateway_request_duration_seconds_bucket"),
    ("Time to first token", "gateway_time_to_first_token_seconds_bucket"),
])
def test_latency_panels_show_p50_p90_p99_from_the_histograms(title: str, bucket: str) -> None:
    queries = exprs(panel_by_title(title))
    for quantile, query in zip(("0.5", "0.9", "0.99"), queries, strict=True):
        assert query.startswith(f"histogram_quantile({quantile}, sum by (le) (rate({bucket}{{")
    assert panel_by_title(title)["fieldConfig"]["defaults"]["unit"] == "s"


def test_template_variables_list_teams_models_and_providers() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert set(variables) == {"team", "model", "provider"}
    for name, variable in variables.items():
        assert variable["query"]["query"] == f"label_values(gateway_requests_total, {name})"
        assert variable["includeAll"] and variable["allValue"] == ".*"


def test_scanner_reads_matchers_grouping_and_ignores_variables_and_ranges() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, model) '
            '(rate(gateway_request_duration_seconds_bucket{team=~"$team", status!="200"}[$__rate_interval])))')
    assert metric_names_and_labels(expr) == {
        ("gateway_request_duration_seconds_bucket", frozenset({"le", "model", "team", "status"})),
    }


def test_scanner_applies_grouping_to_its_own_aggregation_only() -> None:
    expr = 'sum(rate(a_total{kind="x"}[5m])) by (team) / sum(rate(b_total[1h:5m] offset 1d))'
    assert metric_names_and_labels(expr) == {
        ("a_total", frozenset({"kind", "team"})),
        ("b_total", frozenset()),
    }


def test_scanner_reads_label_values_and_drops_prometheus_target_labels() -> None:
    assert metric_names_and_labels("label_values(gateway_requests_total{team=\"a\"}, model)") == {
        ("gateway_requests_total", frozenset({"team", "model"})),
    }
    assert metric_names_and_labels("sum by (instance, job) (gateway_inflight_requests)") == {
        ("gateway_inflight_requests", frozenset()),
    }


def test_scanner_rejects_unbalanced_brackets() -> None:
    with pytest.raises(ValueError):
        metric_names_and_labels("sum(rate(x[5m])")
    with pytest.raises(ValueError):
        metric_names_and_labels('x{team="a"')


# --- against a running gateway --------------------------------------------------------------

LIMITED_KEY = "sk-dashboard-limited-0001"
OPEN_KEY = "sk-dashboard-open-0002"


@pytest.fixture
def busy_gateway(upstream) -> Iterator[GatewayThread]:
    """A gateway that has served, streamed, cached, retried and refused: every series exists."""
    settings = {
        "providers": {"anthropic": {"base_url": upstream.url, "api_key": "sk-upstream-dashboard"}},
        "keys": [{"key": LIMITED_KEY, "team": "dash-limited"}, {"key": OPEN_KEY, "team": "dash-open"}],
        "teams": [{"name": "dash-limited", "rpm": 1}],
    }
    with GatewayThread(**settings) as gateway:
        body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            def post(key: str, **extra: Any) -> int:
                return client.post("/v1/messages", json=dict(body, **extra), headers={"x-api-key": key}).status_code

            upstream.enqueue(json_reply(message_body(cache_read=40, cache_write=20)))
            assert post(OPEN_KEY) == 200
            assert post(OPEN_KEY, stream=True) == 200
            upstream.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
            assert post(OPEN_KEY, models=["claude-sonnet-4-5", "claude-haiku-4-5"]) == 200  # a fallback
            assert post(LIMITED_KEY) == 200
            assert post(LIMITED_KEY) == 429
        yield gateway


def exposed_labels(gateway: GatewayThread) -> dict[str, set[str]]:
    """Sample name -> the label names its series carry, from the gateway's /metrics."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    return labels


def test_every_metric_and_label_the_dashboard_reads_is_on_the_gateways_metrics(busy_gateway) -> None:
    exposed = exposed_labels(busy_gateway)
    for query in dashboard_queries():
        for name, labels in metric_names_and_labels(query):
            assert name in exposed, f"{name} (in {query!r}) is not on /metrics"
            assert labels <= exposed[name], f"{name} has no {labels - exposed[name]} on /metrics ({query!r})"
