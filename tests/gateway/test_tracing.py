"""Request traces: usage records become OpenTelemetry spans that a real OTLP/HTTP collector receives."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from gateway.auth import key_id_for, secret_hash
from gateway.exchange import AttemptRecord, Exchange, Principal
from gateway.request import parse_messages_request, read_headers
from gateway.tracing import RequestTracer, create_tracer, traces_url
from gateway.usage import build_record
from policies.catalog import load_catalog
from policies.plan import Attempt
from providers.base import Usage
from tests.fakes.base import Reply, free_port
from tests.fakes.otlp import OtlpCollector, ReceivedSpan

STARTED = 1_760_000_000.25  # epoch seconds of a request's start, as records carry it


@pytest.fixture(scope="module")
def running_collector():
    with OtlpCollector() as collector:
        yield collector


@pytest.fixture
def collector(running_collector):
    running_collector.reset()
    running_collector.default = None
    yield running_collector


@pytest.fixture
def tracer(collector):
    made = RequestTracer(collector.url)
    yield made
    made.shutdown()


def record(**overrides: Any) -> dict[str, Any]:
    """A usage record shaped as `gateway.usage.build_record` makes it."""
    base = {
        "request_id": "req_0001", "ts": STARTED, "team": "team-a", "key_id": "key_ab12", "user": "user-7",
        "session_id": None, "trace": {}, "model_requested": "claude-opus-4-8",
        "model": "anthropic/claude-opus-4.8", "provider": "anthropic",
        "attempts": [{"provider": "anthropic", "model": "anthropic/claude-opus-4.8", "outcome": "ok"}],
        "status": 200, "error_type": None, "streamed": False, "input_tokens": 100, "output_tokens": 40,
        "cache_creation_input_tokens": 20, "cache_read_input_tokens": 300, "cost_usd": 0.00175,
        "latency_ms": 1234.5, "ttft_ms": 321.0, "output_tps": 43.5, "estimated": False, "limited_by": None,
    }
    base.update(overrides)
    return base


def export_and_collect(tracer: RequestTracer, collector: OtlpCollector, *records: dict) -> list[ReceivedSpan]:
    tracer.export(records)
    assert tracer.force_flush()
    spans = collector.wait_for_spans(len(records))
    assert len(spans) == len(records)
    by_request = {s.attributes["gateway.request_id"]: s for s in spans}
    return [by_request[r["request_id"]] for r in records]


def sha256_id(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).digest()[:size].hex()


# -- what one span says ----------------------------------------------------------------------------

def test_request_becomes_a_client_span_named_after_the_operation_and_requested_model(tracer, collector):
    (span,) = export_and_collect(tracer, collector, record())
    assert span.name == "chat claude-opus-4-8"
    assert span.kind == "CLIENT"
    assert span.parent_span_id == ""
    assert span.status == "UNSET"
    assert span.resource["service.name"] == "llm-gateway"


def test_span_times_are_the_request_start_and_its_latency(tracer, collector):
    (span,) = export_and_collect(tracer, collector, record(ts=STARTED, latency_ms=1234.5))
    assert abs(span.start_ns - int(STARTED * 1e9)) < 1_000  # float epoch seconds hold microseconds
    assert span.end_ns - span.start_ns == 1_234_500_000


def test_span_carries_genai_attributes(tracer, collector):
    (span,) = export_and_collect(tracer, collector, record(session_id="sess-42"))
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.system"] == "anthropic"
    assert attributes["gen_ai.request.model"] == "claude-opus-4-8"
    assert attributes["gen_ai.response.model"] == "anthropic/claude-opus-4.8"
    assert attributes["gen_ai.usage.output_tokens"] == 40
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 300
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 20
    assert attributes["gen_ai.conversation.id"] == "sess-42"
    assert attributes["session.id"] == "sess-42"
    assert attributes["user.id"] == "user-7"
    assert attributes["http.response.status_code"] == 200
    assert "error.type" not in attributes


def test_input_tokens_include_the_cached_ones_as_the_conventions_count_them(tracer, collector):
    (span,) = export_and_collect(tracer, collector, record(input_tokens=100, cache_read_input_tokens=300,
                                                          cache_creation_input_tokens=20))
    assert span.attributes["gen_ai.usage.input_tokens"] == 420


def test_span_carries_the_gateways_own_accounting(tracer, collector):
    attempts = [{"provider": "anthropic", "model": "anthropic/claude-opus-4.8", "outcome": "429"},
                {"provider": "amazon-bedrock", "model": "anthropic/claude-opus-4.8", "outcome": "ok"}]
    (span,) = export_and_collect(tracer, collector, record(attempts=attempts, streamed=True, estimated=True))
    attributes = span.attributes
    assert attributes["gateway.request_id"] == "req_0001"
    assert attributes["gateway.team"] == "team-a"
    assert attributes["gateway.key_id"] == "key_ab12"
    assert attributes["gateway.cost_usd"] == pytest.approx(0.00175)
    assert attributes["gateway.attempts"] == \
        "anthropic/anthropic/claude-opus-4.8=429,amazon-bedrock/anthropic/claude-opus-4.8=ok"
    assert attributes["gateway.time_to_first_token_ms"] == 321.0
    assert attributes["gateway.output_tokens_per_second"] == 43.5
    assert attributes["gateway.streamed"] is True
    assert attributes["gateway.usage_estimated"] is True


def test_failed_request_has_error_status_and_error_type(tracer, collector):
    (span,) = export_and_collect(tracer, collector, record(status=429, error_type="rate_limit_error", provider=None,
                                                          model=None, output_tokens=0, ttft_ms=None))
    assert span.status == "ERROR"
    assert span.status_message == "rate_limit_error"
    assert span.attributes["error.type"] == "rate_limit_error"
    assert span.attributes["http.response.status_code"] == 429
    assert "gen_ai.provider.name" not in span.attributes
    assert "gateway.time_to_first_token_ms" not in span.attributes


def test_stream_that_failed_after_its_200_is_an_error_span(tracer, collector):
    (span,) = export_and_collect(tracer, collector, record(status=200, streamed=True, error_type="api_error"))
    assert span.status == "ERROR"
    assert span.attributes["error.type"] == "api_error"


def test_error_without_a_type_names_the_status(tracer, collector):
    (span,) = export_and_collect(tracer, collector, record(status=502, error_type=None))
    assert span.status == "ERROR"
    assert span.attributes["error.type"] == "502"


# -- trace identity ----------------------------------------------------------------------------------

def test_hex_trace_id_and_parent_span_id_are_used_as_given(tracer, collector):
    trace = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "parent_span_id": "00f067aa0ba902b7"}
    (span,) = export_and_collect(tracer, collector, record(trace=trace))
    assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_span_id == "00f067aa0ba902b7"
    assert span.span_id not in ("", "00f067aa0ba902b7")


def test_uppercase_hex_and_uuid_trace_ids_keep_their_bits(tracer, collector):
    upper, uuid = export_and_collect(
        tracer, collector,
        record(request_id="req_upper", trace={"trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736"}),
        record(request_id="req_uuid", trace={"trace_id": "550e8400-e29b-41d4-a716-446655440000"}))
    assert upper.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert uuid.trace_id == "550e8400e29b41d4a716446655440000"


def test_any_other_trace_id_is_hashed_so_its_requests_share_one_trace(tracer, collector):
    trace = {"trace_id": "checkout-flow-17", "parent_span_id": "agent-step-3"}
    first, second = export_and_collect(tracer, collector, record(request_id="req_a", trace=trace),
                                       record(request_id="req_b", trace=dict(trace)))
    assert first.trace_id == second.trace_id == sha256_id("checkout-flow-17", 16)
    assert first.parent_span_id == second.parent_span_id == sha256_id("agent-step-3", 8)
    assert first.span_id != second.span_id
    assert first.attributes["gateway.trace_id"] == "checkout-flow-17"


def test_requests_of_one_session_share_a_trace_when_no_trace_id_is_given(tracer, collector):
    one, two, other = export_and_collect(
        tracer, collector,
        record(request_id="req_1", session_id="sess-9"), record(request_id="req_2", session_id="sess-9"),
        record(request_id="req_3", session_id="sess-10"))
    assert one.trace_id == two.trace_id
    assert other.trace_id != one.trace_id
    assert one.parent_span_id == two.parent_span_id == ""


def test_trace_id_wins_over_session(tracer, collector):
    (span,) = export_and_collect(tracer, collector,
                                 record(session_id="sess-9", trace={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}))
    assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_requests_without_trace_or_session_each_start_their_own_trace(tracer, collector):
    spans = export_and_collect(tracer, collector, *(record(request_id=f"req_{i}") for i in range(3)))
    assert len({s.trace_id for s in spans}) == 3
    assert all(s.parent_span_id == "" and int(s.trace_id, 16) for s in spans)


# -- names and the caller's own keys --------------------------------------------------------------

def test_generation_name_then_span_name_override_the_span_name(tracer, collector):
    both, span_only = export_and_collect(
        tracer, collector,
        record(request_id="req_both", trace={"span_name": "plan", "generation_name": "draft-answer"}),
        record(request_id="req_span", trace={"span_name": "plan", "trace_name": "support-bot"}))
    assert both.name == "draft-answer"
    assert span_only.name == "plan"
    assert span_only.attributes["gateway.trace_name"] == "support-bot"


def test_custom_trace_keys_become_trace_attributes_as_strings(tracer, collector):
    trace = {"trace_id": "t-1", "trace_name": "support-bot", "environment": "prod", "attempt": 3,
             "tags": ["a", "b"], "meta": {"tier": "gold"}, "beta": True, "notes": "x" * 10_000}
    (span,) = export_and_collect(tracer, collector, record(trace=trace))
    custom = {k: v for k, v in span.attributes.items() if k.startswith("trace.")}
    assert custom == {"trace.environment": "prod", "trace.attempt": "3", "trace.tags": '["a","b"]',
                      "trace.meta": '{"tier":"gold"}', "trace.beta": "true", "trace.notes": "x" * 4096}


# -- delivery ----------------------------------------------------------------------------------------

def test_spans_reach_the_collector_on_their_own_schedule(collector):
    tracer = RequestTracer(collector.url, schedule_delay_ms=50)
    try:
        tracer.export([record()])
        spans = collector.wait_for_spans(1, timeout=5)
    finally:
        tracer.shutdown()
    assert [s.attributes["gateway.request_id"] for s in spans] == ["req_0001"]
    assert collector.requests[0].headers["content-type"] == "application/x-protobuf"


# Alone: five exports must take under 0.45 s, 0.15 of it asleep; another worker's load could add the rest.
@pytest.mark.alone
def test_export_returns_before_the_collector_answers(collector):
    collector.default = Reply(status=200, chunks=[b""], content_type="application/x-protobuf", delay_first=0.6)
    tracer = RequestTracer(collector.url, schedule_delay_ms=10)
    try:
        began = time.perf_counter()
        for i in range(5):
            tracer.export([record(request_id=f"req_{i}")])
            time.sleep(0.03)  # let the export thread pick up a batch and wait on the slow collector
        spent = time.perf_counter() - began
        assert collector.wait_for_spans(1, timeout=5)
    finally:
        tracer.shutdown()
    assert spent < 0.45


def test_an_unreachable_collector_neither_raises_nor_holds_the_stop(collector):
    # Left to itself the exporter would retry each of these batches for up to 10 s.
    tracer = RequestTracer(f"http://127.0.0.1:{free_port()}", schedule_delay_ms=10, export_timeout_s=10)
    tracer.export([record(request_id=f"req_{i}") for i in range(2000)])
    began = time.perf_counter()
    tracer.shutdown(timeout_s=0.5)
    assert time.perf_counter() - began < 2


def test_a_malformed_record_costs_only_its_own_span(tracer, collector, caplog):
    tracer.export([record(request_id="req_bad", ts=None), record(request_id="req_good")])
    assert tracer.force_flush()
    spans = collector.wait_for_spans(1)
    assert [s.attributes["gateway.request_id"] for s in spans] == ["req_good"]
    assert "req_bad" in caplog.text


def test_configured_headers_are_sent_to_the_collector(collector):
    tracer = RequestTracer(collector.url, headers={"authorization": "Basic b3RlbDpzZWNyZXQ="})
    try:
        tracer.export([record()])
        tracer.force_flush()
    finally:
        tracer.shutdown()
    assert collector.requests[0].headers["authorization"] == "Basic b3RlbDpzZWNyZXQ="


def test_traces_path_is_added_to_a_base_endpoint():
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("https://otel.example.com/v1/traces") == "https://otel.example.com/v1/traces"
    assert traces_url("https://cloud.example.com/api/public/otel") == \
        "https://cloud.example.com/api/public/otel/v1/traces"


def test_an_endpoint_that_is_no_http_url_is_refused():
    with pytest.raises(ValueError, match="otlp_endpoint"):
        create_tracer("127.0.0.1:4318")


# -- what never leaves, and what costs nothing ------------------------------------------------------

def test_client_api_key_never_reaches_the_collector(tracer, collector):
    secret = "sk-live-team-a-0123456789abcdef"
    body = {"model": "claude-opus-4-8", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}],
            "session_id": "sess-1", "user": "user-7", "trace": {"trace_id": "run-5", "environment": "prod"}}
    headers = read_headers([(b"x-api-key", secret.encode()), (b"authorization", f"Bearer {secret}".encode())])
    ex = Exchange(request_id="req_secret", headers=headers, query="",
                  principal=Principal(key_id=key_id_for(secret_hash(secret)), team="team-a"),
                  request=parse_messages_request(orjson.dumps(body), headers))
    catalog = load_catalog()
    model = catalog.get("anthropic/claude-opus-4.8")
    endpoint = model.endpoints[0]
    ex.served_by = Attempt(model, endpoint, catalog.provider(endpoint.provider), endpoint.upstream_model)
    ex.attempts.append(AttemptRecord(endpoint.provider, model.id, "ok"))
    ex.usage = Usage(input_tokens=12, output_tokens=5)
    ex.status = 200

    (span,) = export_and_collect(tracer, collector, build_record(ex, ex.started + 0.5))

    assert span.attributes["gateway.key_id"] == key_id_for(secret_hash(secret))
    assert span.attributes["gen_ai.response.model"] == "anthropic/claude-opus-4.8"
    assert span.attributes["trace.environment"] == "prod"
    assert span.end_ns - span.start_ns == 500_000_000
    sent = b"".join(r.body + repr(r.header_list).encode() for r in collector.requests)
    assert secret.encode() not in sent


def test_no_tracer_without_an_endpoint():
    assert create_tracer(None) is None
    assert create_tracer("") is None


def test_opentelemetry_is_loaded_only_once_a_tracer_is_created(collector):
    script = (
        "import sys\n"
        "import gateway.app, gateway.usage, gateway.tracing\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry')\n"
        "assert gateway.tracing.create_tracer(None) is None\n"
        "print(len(loaded()))\n"
        f"tracer = gateway.tracing.create_tracer({collector.url!r})\n"
        "print(len(loaded()))\n"
        "tracer.shutdown()\n")
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split()
    assert before == "0"
    assert int(after) > 0


def test_a_request_through_the_gateway_becomes_a_span(anthropic_upstream):
    from tests.conftest import TEAM_KEY, base_settings
    from tests.fakes.otlp import OtlpCollector
    from tests.gateway_server import GatewayThread
    import httpx

    anthropic_upstream.reset()
    with OtlpCollector() as collector:
        settings = base_settings(anthropic_upstream.url, otlp_endpoint=collector.url)
        with GatewayThread(**settings) as gw:
            response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
                "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                "session_id": "s-42", "trace": {"trace_id": "0af7651916cd43dd8448eb211c80319c", "feature": "x"}})
            assert response.status_code == 200
        [span] = collector.wait_for_spans(1)
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.attributes["gen_ai.request.model"] == "claude-haiku-4-5"
    assert span.attributes["gen_ai.response.model"] == "anthropic/claude-haiku-4.5"
    assert span.attributes["trace.feature"] == "x"
    assert span.attributes["gateway.request_id"] == response.headers["request-id"]
