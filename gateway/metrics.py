"""Prometheus metrics: the names and labels the dashboards query, and the /metrics endpoint.

Labels are bounded: team (created by admins), model (catalog ids only), provider, HTTP status,
token kind, attempt outcome, search backend; never a key, a user or a session. With several worker
processes the values live in `PROMETHEUS_MULTIPROC_DIR` (set by `gateway serve --workers N` before the workers
start) and /metrics sums them, so every worker answers with the same totals.
"""
from __future__ import annotations

import bisect
import hmac
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
SEARCH_REQUESTS = Counter("gateway_search_requests_total", "Web searches run by the gateway, by outcome "
                          "(ok, cached, or the web search error code)", ["backend", "team", "outcome"])
INFLIGHT = Gauge("gateway_inflight_requests", "Requests being served", multiprocess_mode="livesum")
USAGE_BACKLOG = Gauge("gateway_usage_backlog_records", "Usage records waiting for the store",
                      multiprocess_mode="livesum")
USAGE_BUFFER = Gauge("gateway_usage_buffer_records", "Usage records in the Redis buffer, not yet in the record store",
                     multiprocess_mode="max")
USAGE_BOUND_HITS = Counter("gateway_usage_bound_hits_total", "Usage records that met a bound (buffer: the Redis "
                           "buffer was full; memory: too many pending in a process) and went to the spill file",
                           ["bound"])
USAGE_DB_ROWS = Counter("gateway_usage_db_rows_total", "Usage records written to the record store")
USAGE_DB_UP = Gauge("gateway_usage_db_up", "1 while the record store accepts writes, 0 while it does not",
                    multiprocess_mode="min")
USAGE_REJECTED = Counter("gateway_usage_records_rejected_total",
                         "Usage records the record store refused even in their minimal form (logged in full)")

# Token kinds in the order observe() sums them, each with its record field.
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


def observe(records: list[dict]) -> None:
    """Count a batch of finished requests from their usage records.

    Everything is summed over the batch first and each labelled child is changed once per batch:
    each increment and each histogram observation takes a lock, and a batch holds many requests of
    the same team and model."""
    sums: dict[tuple[str, str, str], list[float]] = {}  # (team, model, provider) -> tokens by kind, cost
    counts: dict[tuple, int] = {}  # (counter, labels) -> requests
    latencies: dict[tuple[str, str], list[float]] = {}  # (model, provider) -> seconds
    ttfts: dict[tuple[str, str], list[float]] = {}
    for record in records:
        team, model, provider = record["team"] or "", record["model"] or "", record["provider"] or ""
        served = (team, model, provider)
        totals = sums.get(served)
        if totals is None:
            totals = sums[served] = [0, 0, 0, 0, 0.0]
        totals[0] += record["input_tokens"]
        totals[1] += record["output_tokens"]
        totals[2] += record["cache_read_input_tokens"]
        totals[3] += record["cache_creation_input_tokens"]
        totals[4] += record["cost_usd"]
        status = record["status"]
        key = (REQUESTS, (team, model, provider, str(status)))
        counts[key] = counts.get(key, 0) + 1
        if provider:
            route = (model, provider)
            seconds = latencies.get(route)
            if seconds is None:
                seconds = latencies[route] = []
            seconds.append(record["latency_ms"] / 1000)
            ttft_ms = record["ttft_ms"]
            if ttft_ms is not None:
                ttfts.setdefault(route, []).append(ttft_ms / 1000)
        attempts = record["attempts"]
        for attempt in attempts:
            key = (ATTEMPTS, (attempt["provider"], attempt["outcome"]))
            counts[key] = counts.get(key, 0) + 1
        if len(attempts) > 1 and status == 200:
            key = (FALLBACKS, (model,))
            counts[key] = counts.get(key, 0) + 1
        if status == 429 and record.get("limited_by"):
            key = (RATE_LIMITED, (team, record["limited_by"]))
            counts[key] = counts.get(key, 0) + 1
    for (metric, labels), amount in counts.items():
        _child(metric, *labels).inc(amount)
    for (team, model, provider), totals in sums.items():
        for (kind, _), amount in zip(_KIND_FIELDS, totals):
            if amount:
                _child(TOKENS, team, model, provider, kind).inc(amount)
        if totals[4]:
            _child(COST, team, model, provider).inc(totals[4])
    for histogram, values_of in ((DURATION, latencies), (TTFT, ttfts)):
        for labels, values in values_of.items():
            observe_all(_child(histogram, *labels), values)


def observe_all(histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for every value, with one lock taken per bucket used and one for the
    sum rather than two per value: through the child's buckets, bounds and sum, which
    prometheus_client has kept under these names in every version; without them, observe()."""
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        i = bisect.bisect_left(bounds, value)  # the first bucket whose upper bound is >= value, as observe()
        counts[i] = counts.get(i, 0) + 1
    total.inc(sum(values))
    for i, count in counts.items():
        buckets[i].inc(count)


def count_search(backend: str, team: str, outcome: str) -> None:
    _child(SEARCH_REQUESTS, backend, team, outcome).inc()


def authorized(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries the metrics token as Bearer (compared in constant time)."""
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
