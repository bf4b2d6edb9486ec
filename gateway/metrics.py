"""Prometheus metrics: the names and labels the dashboards query, and the /metrics endpoint.

Labels are bounded: team (created by admins), model (catalog ids only), provider, HTTP status,
token kind, attempt outcome; never a key, a user or a session. With several worker processes the
values live in `PROMETHEUS_MULTIPROC_DIR` (set by `gateway serve --workers N` before the workers
start) and /metrics sums them, so every worker answers with the same totals.
"""
from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

# LLM requests last from tens of milliseconds (a cached short answer) to minutes (long generations).
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60)

REQUESTS = Counter("gateway_requests_total", "Requests answered, by final HTTP status",
                   ["team", "model", "provider", "status"])
TOKENS = Counter("gateway_tokens_total", "Tokens used, by kind",
                 ["team", "model", "provider", "kind"])
COST = Counter("gateway_cost_usd_total", "Cost in USD from catalog prices", ["team", "model", "provider"])
DURATION = Histogram("gateway_request_duration_seconds", "Time from request to last byte",
                     ["model", "provider"], buckets=LATENCY_BUCKETS)
TTFT = Histogram("gateway_time_to_first_token_seconds", "Time from request to the first token sent",
                 ["model", "provider"], buckets=TTFT_BUCKETS)
ATTEMPTS = Counter("gateway_upstream_attempts_total", "Upstream attempts, by outcome",
                   ["provider", "outcome"])
FALLBACKS = Counter("gateway_fallbacks_total", "Requests served by another endpoint or model than the first",
                    ["model"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by the gateway's own limits",
                       ["team", "reason"])
INFLIGHT = Gauge("gateway_inflight_requests", "Requests being served", multiprocess_mode="livesum")
USAGE_BACKLOG = Gauge("gateway_usage_backlog_records", "Usage records waiting for the store",
                      multiprocess_mode="livesum")

_KIND_FIELDS = (("input", "input_tokens"), ("output", "output_tokens"),
                ("cache_read", "cache_read_input_tokens"), ("cache_write", "cache_creation_input_tokens"))


_children: dict[tuple, object] = {}


def _child(metric, *labels: str):
    """The metric's labelled child, looked up once: `labels()` validates and locks on every call."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def observe(record: dict) -> None:
    """Count one finished request from its usage record."""
    team, model, provider = record["team"] or "", record["model"] or "", record["provider"] or ""
    _child(REQUESTS, team, model, provider, str(record["status"])).inc()
    for kind, field in _KIND_FIELDS:
        value = record[field]
        if value:
            _child(TOKENS, team, model, provider, kind).inc(value)
    if record["cost_usd"]:
        _child(COST, team, model, provider).inc(record["cost_usd"])
    if record["provider"]:
        _child(DURATION, model, provider).observe(record["latency_ms"] / 1000)
        if record["ttft_ms"] is not None:
            _child(TTFT, model, provider).observe(record["ttft_ms"] / 1000)
    for attempt in record["attempts"]:
        _child(ATTEMPTS, attempt["provider"], attempt["outcome"]).inc()
    if len(record["attempts"]) > 1 and record["status"] == 200:
        FALLBACKS.labels(model).inc()
    if record["status"] == 429 and record.get("limited_by"):
        RATE_LIMITED.labels(team, record["limited_by"]).inc()


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
