"""A loopback OTLP/HTTP trace collector: accepts `POST /v1/traces` and decodes what it receives.

Bodies are protobuf `ExportTraceServiceRequest`s (gzip-compressed or not), decoded with
opentelemetry-proto into plain `ReceivedSpan`s, so tests assert on ids, names, times and
attributes exactly as a tracing backend would see them.
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.fakes.base import RecordedRequest, Reply, ScriptedServer

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # "CLIENT", "SERVER", ...
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str  # "UNSET", "OK" or "ERROR"
    status_message: str
    resource: dict[str, Any]
    scope: str


class OtlpCollector(ScriptedServer):
    def auto_reply(self, request: RecordedRequest) -> Reply:
        if request.method == "POST" and request.path == "/v1/traces":
            return Reply(status=200, chunks=[ExportTraceServiceResponse().SerializeToString()],
                         content_type=PROTOBUF)
        return Reply(status=404, chunks=[b"not found"], content_type="text/plain")

    def exports(self) -> list[ExportTraceServiceRequest]:
        """Every export request received on the traces path, decoded."""
        decoded = []
        for request in list(self.requests):
            if request.method != "POST" or request.path != "/v1/traces":
                continue
            body = request.body
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            decoded.append(message)
        return decoded

    def spans(self) -> list[ReceivedSpan]:
        received = []
        for message in self.exports():
            for resource_spans in message.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        received.append(_received(span, resource, scope_spans.scope.name))
        return received

    def wait_for_spans(self, count: int, timeout: float = 5.0) -> list[ReceivedSpan]:
        """The spans received once there are at least `count` of them (or all there are at the timeout)."""
        deadline = time.monotonic() + timeout
        spans = self.spans()
        while len(spans) < count and time.monotonic() < deadline:
            time.sleep(0.01)
            spans = self.spans()
        return spans


def _received(span: Span, resource: dict[str, Any], scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(),
        name=span.name, kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
        attributes=_attributes(span.attributes),
        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message, resource=resource, scope=scope)


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None
