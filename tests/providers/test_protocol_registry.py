"""Every catalog protocol name is one module implementing the contract, and the executor names none."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from policies.catalog import PROTOCOLS, load_catalog
from providers.protocol import ClientRequest, Failure, Translated, classify, protocol_for, stream_failure

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ("options", "request", "failure", "message", "stream", "count_request", "counted")


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_each_protocol_name_has_an_implementation_of_the_contract(name):
    protocol = protocol_for(name)
    missing = [method for method in CONTRACT if not callable(getattr(protocol, method, None))]
    assert missing == []
    assert protocol.local is (name == "mock") and (not protocol.local or callable(protocol.local_answer))
    assert protocol.answers == "messages"


def test_every_provider_and_endpoint_of_the_catalog_speaks_a_registered_protocol():
    catalog = load_catalog()
    spoken = {p.protocol for p in catalog.providers.values()}
    spoken |= {e.protocol for m in catalog.models.values() for e in m.endpoints if e.protocol}
    assert spoken <= PROTOCOLS and {"openai-responses", "gemini"} <= spoken


def test_the_gateway_names_no_protocol():
    for module in ("execute.py", "local.py"):
        source = (ROOT / "gateway" / module).read_text()
        named = [n for n in PROTOCOLS if re.search(rf"""["']{re.escape(n)}["']""", source)]
        assert named == [], module
        assert not re.search(r"from providers import|providers\.(anthropic|openai|gemini|mock)", source), module


@pytest.mark.parametrize("status,client_status,outcome,shown", [
    (429, 429, "429", (429, "rate_limit_error")),
    (401, 401, "401", (502, "api_error")),
    (400, 401, "401", (502, "api_error")),   # a protocol that says "your key" with a 400 (Google)
    (503, 529, "503", (529, "overloaded_error")),
    (504, 504, "504", (504, "timeout_error")),
    (408, 504, "408", (504, "timeout_error")),
    (500, 502, "500", (502, "api_error")),
    (404, 404, "404", (404, "not_found_error")),
])
def test_upstream_side_failures_are_classified_alike_for_every_protocol(status, client_status, outcome, shown):
    failure = classify("p", status, client_status=client_status, error_type="not_found_error", message="m",
                       headers={"retry-after": "3"})
    assert (failure.outcome, (failure.status, failure.error_type)) == (outcome, shown)
    assert failure.retry_after == (3.0 if status == 429 else None)


def test_what_the_body_says_about_the_model_decides_the_fallback():
    assert classify("p", 400, client_status=400, error_type="invalid_request_error", message="too long",
                    context_length=True).outcome == "context_length"
    assert classify("p", 400, client_status=400, error_type="invalid_request_error", message="flagged",
                    moderation=True).outcome == "moderation"
    # Google's RetryInfo stands in for a missing retry-after header.
    assert classify("p", 429, client_status=429, error_type="rate_limit_error", message="m", headers={},
                    retry_after=21.0).retry_after == 21.0
    assert stream_failure("p", ("overloaded_error", "busy")) == Failure("529", 529, "overloaded_error",
                                                                          "provider p: busy")


class _Machine:
    """A translator state machine that reports an upstream error object as its first event."""
    finished = False
    failure = None

    def feed(self, data):
        self.failure = ("api_error", "key sk-abcdefghijklmnop0123 refused")
        return [b'event: error\ndata: {"type":"error","error":{"message":"key sk-abcdefghijklmnop0123"}}\n\n']


def test_a_translated_stream_redacts_its_error_and_tells_the_upstreams_error_from_its_own():
    stream = Translated(_Machine(), ("sk-abcdefghijklmnop0123",))
    out = stream.feed(b'data: {"error": {"message": "key sk-abcdefghijklmnop0123"}}\n\n')
    assert b"sk-abcdefghijklmnop0123" not in out and b"[redacted]" in out
    assert not stream.started and stream.error == stream.failure
    quiet = Translated(_Machine(), ())
    quiet.feed(b"data: not json\n\n")
    assert quiet.failure is not None and quiet.error is None  # unreadable, not the upstream's error


PASSED_THROUGH = {"openai_chat": {"openai", "azure"}, "openai_responses": {"openai-responses"}}


@pytest.mark.parametrize("inbound, name", [(inbound, name) for inbound, names in PASSED_THROUGH.items()
                                           for name in sorted(names)])
def test_a_client_of_an_upstreams_own_api_gets_its_passthrough_and_others_the_translating_protocol(inbound, name):
    client = ClientRequest(inbound, b"{}", {})
    passthrough = protocol_for(name, client)
    missing = [method for method in CONTRACT if not callable(getattr(passthrough, method, None))]
    assert missing == [] and passthrough.answers == inbound and not passthrough.local
    assert protocol_for(name) is protocol_for(name, None) and protocol_for(name).answers == "messages"
    others = sorted(PROTOCOLS - PASSED_THROUGH[inbound])
    assert all(protocol_for(other, client) is protocol_for(other) for other in others)
