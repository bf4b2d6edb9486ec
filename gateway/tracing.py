"""OpenTelemetry traces of gateway requests: one CLIENT span per usage record, sent over OTLP/HTTP.

Spans are built from the records `gateway.usage` already produces, after the request has ended, with
explicit start and end times; a `BatchSpanProcessor` thread does the network I/O, so neither the
request nor the event loop ever waits for the collector. Names and attributes follow the
OpenTelemetry GenAI semantic conventions (`chat {gen_ai.request.model}`, `gen_ai.*`); what those
conventions do not cover is under `gateway.*`, and the caller's own `trace` keys under `trace.*`.

Trace identity comes from the request's `trace` object: a 32-hex `trace_id` is used as is, any
other string is hashed to a stable 128-bit id (so every request naming the same trace joins it);
without one, requests of the same `session_id` share a trace; otherwise the trace id is random.
`parent_span_id` (16 hex, or any string hashed the same way) becomes the span's parent.

The OpenTelemetry packages are imported only when a tracer is created: a gateway without
`otlp_endpoint` loads none of them.
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import orjson

log = logging.getLogger("gateway.tracing")

AttributeValue = str | bool | int | float

TRACES_PATH = "/v1/traces"
# Keys of the request's `trace` object that steer the span itself; every other key is copied to
# a `trace.<key>` attribute.
STEERING_KEYS = frozenset({"trace_id", "parent_span_id", "trace_name", "span_name", "generation_name"})
MAX_ATTRIBUTE_CHARS = 4096  # a caller's trace values are free-form; keep one span bounded
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# -- from a record to a span: pure functions ----------------------------------------------------

def trace_id_of(record: Mapping[str, Any]) -> int | None:
    """The OTel trace id a record belongs to, or None for a fresh random one."""
    trace = record.get("trace") or {}
    given = trace.get("trace_id")
    if given not in (None, ""):
        text = str(given)
        if _UUID.fullmatch(text):
            text = text.replace("-", "")  # a UUID is the common spelling of a 128-bit id
        if _HEX32.fullmatch(text) and int(text, 16):
            return int(text, 16)
        return _derived_id(text, 16)
    session = record.get("session_id")
    if session:
        return _derived_id("session:" + session, 16)
    return None


def parent_span_id_of(record: Mapping[str, Any]) -> int | None:
    trace = record.get("trace") or {}
    given = trace.get("parent_span_id")
    if given in (None, ""):
        return None
    text = str(given)
    if _HEX16.fullmatch(text) and int(text, 16):
        return int(text, 16)
    return _derived_id(text, 8)


def _derived_id(text: str, size: int) -> int:
    """A stable non-zero id of `size` bytes, so the same string always names the same trace or span."""
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big")
    return value or 1


def span_name_of(record: Mapping[str, Any]) -> str:
    trace = record.get("trace") or {}
    # The span is the model call itself, so a generation name is the more specific of the two.
    for key in ("generation_name", "span_name"):
        if trace.get(key) not in (None, ""):
            return str(trace[key])
    model = record.get("model_requested") or record.get("model")
    return f"chat {model}" if model else "chat"


def is_failure(record: Mapping[str, Any]) -> bool:
    # A stream that failed after its 200 went out still carries an error type.
    return bool(record.get("error_type")) or int(record.get("status") or 500) >= 400


def error_type_of(record: Mapping[str, Any]) -> str:
    return str(record.get("error_type") or record.get("status") or "_OTHER")


def span_attributes(record: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """The span's attributes: GenAI conventions first, then the gateway's own, then the caller's."""
    trace = record.get("trace") or {}
    fresh_input = int(record.get("input_tokens") or 0)
    cache_read = int(record.get("cache_read_input_tokens") or 0)
    cache_write = int(record.get("cache_creation_input_tokens") or 0)
    attempts = ",".join(f"{a['provider']}/{a['model']}={a['outcome']}" for a in record.get("attempts") or ())
    candidates: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": record.get("provider"),
        "gen_ai.system": record.get("provider"),
        "gen_ai.request.model": record.get("model_requested"),
        "gen_ai.response.model": record.get("model"),
        # Records count tokens the Anthropic way, where input_tokens leaves out the cached part;
        # the conventions count every input token there and the cached ones again on their own.
        "gen_ai.usage.input_tokens": fresh_input + cache_read + cache_write,
        "gen_ai.usage.output_tokens": int(record.get("output_tokens") or 0),
        "gen_ai.usage.cache_read.input_tokens": cache_read,
        "gen_ai.usage.cache_creation.input_tokens": cache_write,
        "gen_ai.conversation.id": record.get("session_id"),
        "session.id": record.get("session_id"),
        "user.id": record.get("user"),
        "http.response.status_code": int(record.get("status") or 500),
        "error.type": error_type_of(record) if is_failure(record) else None,
        "gateway.request_id": record.get("request_id"),
        "gateway.team": record.get("team"),
        "gateway.key_id": record.get("key_id"),
        "gateway.cost_usd": float(record.get("cost_usd") or 0.0),
        "gateway.attempts": attempts or None,
        "gateway.streamed": bool(record.get("streamed")),
        "gateway.time_to_first_token_ms": record.get("ttft_ms"),
        "gateway.output_tokens_per_second": record.get("output_tps"),
        "gateway.usage_estimated": True if record.get("estimated") else None,
        "gateway.limited_by": record.get("limited_by"),
        "gateway.trace_id": _text(trace.get("trace_id")),
        "gateway.trace_name": _text(trace.get("trace_name")),
    }
    attributes = {key: value for key, value in candidates.items() if value is not None}
    for key, value in trace.items():
        if key not in STEERING_KEYS and value is not None:
            attributes[f"trace.{key}"] = _text(value)
    return attributes


def _text(value: Any) -> str | None:
    """A caller-supplied value as a bounded string: strings as they are, anything else as JSON."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = str(value)
    return text[:MAX_ATTRIBUTE_CHARS]


def span_times_ns(record: Mapping[str, Any]) -> tuple[int, int]:
    start = int(float(record["ts"]) * 1e9)
    return start, start + round(float(record.get("latency_ms") or 0.0) * 1e6)


def traces_url(endpoint: str) -> str:
    """The collector's traces URL: a base URL gets `/v1/traces`, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"otlp_endpoint: expected an http:// or https:// URL, got {endpoint!r}")
    base = endpoint.rstrip("/")
    return base if parts.path.rstrip("/").endswith(TRACES_PATH) else base + TRACES_PATH


# -- the exporter --------------------------------------------------------------------------------

def _trace_id_chooser() -> Any:
    """The SDK's id generator, told which trace id the next root span belongs to.

    The SDK offers no other way to give a span without a parent a trace id of our choosing. It asks
    the generator once per root span, under `RequestTracer`'s lock, so a plain attribute is enough.
    Defined here rather than at module level because its base class lives in the SDK, imported late.
    """
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ChosenTraceIds(RandomIdGenerator):
        next_trace_id: int | None = None

        def generate_trace_id(self) -> int:
            chosen, self.next_trace_id = self.next_trace_id, None
            return chosen if chosen is not None else super().generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return False  # ids hashed from a caller's string are not the random kind W3C means

    return ChosenTraceIds()


class RequestTracer:
    """Turns finished requests' usage records into spans and exports them in the background."""

    def __init__(self, endpoint: str, *, service_name: str = "llm-gateway",
                 headers: Mapping[str, str] | None = None, schedule_delay_ms: int = 1000,
                 export_timeout_s: float = 5.0, max_queue_size: int = 16384) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        self.url = traces_url(endpoint)
        self._ids = _trace_id_chooser()
        self._lock = threading.Lock()
        resource = Resource.create({"service.name": service_name, "service.version": _gateway_version()})
        # Every request is recorded in usage anyway; a sampler read from the environment would
        # silently drop some of them here.
        self._provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, id_generator=self._ids,
                                        span_limits=SpanLimits(max_span_attribute_length=MAX_ATTRIBUTE_CHARS),
                                        shutdown_on_exit=False)
        self._exporter = OTLPSpanExporter(endpoint=self.url, headers=dict(headers) if headers else None,
                                          timeout=export_timeout_s)
        self._provider.add_span_processor(BatchSpanProcessor(
            self._exporter, max_queue_size=max_queue_size, schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=512))
        self._tracer = self._provider.get_tracer("llm-gateway", _gateway_version())

    def export(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue one span per record; returns without waiting for the collector."""
        with self._lock:
            for record in records:
                try:
                    self._emit(record)
                except Exception:  # one odd record must not cost the others their spans
                    log.exception("no span for usage record %s", record.get("request_id"))

    def _emit(self, record: Mapping[str, Any]) -> None:
        from opentelemetry import trace as trace_api
        from opentelemetry.context import Context

        start_ns, end_ns = span_times_ns(record)
        trace_id = trace_id_of(record)
        parent_id = parent_span_id_of(record)
        if parent_id is not None:
            if trace_id is None:
                trace_id = random.getrandbits(128) or 1
            parent = trace_api.SpanContext(trace_id, parent_id, is_remote=True,
                                           trace_flags=trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED))
            context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent))
        else:
            # An explicit empty context: a span current in the caller is no parent of this one.
            context = Context()
            self._ids.next_trace_id = trace_id
        span = self._tracer.start_span(span_name_of(record), context=context, kind=trace_api.SpanKind.CLIENT,
                                       attributes=span_attributes(record), start_time=start_ns)
        if is_failure(record):
            span.set_status(trace_api.Status(trace_api.StatusCode.ERROR, error_type_of(record)))
        span.end(end_time=end_ns)

    def force_flush(self, timeout_ms: int = 5000) -> bool:
        """Send every queued span now (blocking); for tests and orderly stops."""
        return self._provider.force_flush(timeout_ms)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Send what is queued and stop the export thread, waiting at most about `timeout_s`.

        The SDK's own shutdown waits up to 30 s, and longer while a collector that is down makes
        every queued batch retry; past our timeout the exporter is stopped, which ends the retries
        and drops what is left, so a gateway's stop never hangs on its collector.
        """
        stopping = threading.Thread(target=self._provider.shutdown, name="otlp-shutdown", daemon=True)
        stopping.start()
        stopping.join(timeout_s)
        if stopping.is_alive():
            log.warning("OTLP collector at %s did not take the last spans within %.1f s; dropping them",
                        self.url, timeout_s)
            self._exporter.shutdown()
            stopping.join(timeout_s)


def create_tracer(endpoint: str | None, *, service_name: str = "llm-gateway",
                  headers: Mapping[str, str] | None = None) -> RequestTracer | None:
    """A tracer when an OTLP endpoint is configured, else None (and nothing of OpenTelemetry loaded)."""
    if not endpoint:
        return None
    return RequestTracer(endpoint, service_name=service_name, headers=headers)


def _gateway_version() -> str:
    try:
        return metadata.version("llm-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"
