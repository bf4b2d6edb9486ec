"""POST /v1/messages to an Anthropic-protocol upstream: what the upstream receives, what the client gets."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import TEAM_KEY
from tests.fakes.anthropic import UPSTREAM_MODEL, event, json_reply, message_body, sse_reply, stream_events

EVERY_FIELD = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Look at these.", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
             "title": "Notes", "citations": {"enabled": True}},
            {"type": "search_result", "source": "https://example.com", "title": "A result",
             "content": [{"type": "text", "text": "found"}]},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me check.", "signature": "sig-abc"},
            {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": False,
             "content": [{"type": "text", "text": "18C"}]},
        ]},
    ],
    "tools": [
        {"name": "get_weather", "description": "Weather", "input_schema": {
            "type": "object", "properties": {"city": {"type": "string"}, "model": {"type": "string"}},
            "required": ["city"]}, "cache_control": {"type": "ephemeral"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "metadata": {"user_id": "user-42"},
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "service_tier": "auto",
    "output_config": {"effort": "high"},
    "cache_control": {"type": "ephemeral"},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "a_future_field": {"kept": [1, 2.50, "x"]},
    # router-only fields
    "provider": {"order": ["anthropic"], "allow_fallbacks": True},
    "models": ["anthropic/claude-opus-4.8"],
    "session_id": "session-1",
    "trace": {"trace_id": "t-1", "span_name": "s", "custom": "v"},
    "user": "end-user-7",
    "plugins": [{"id": "web", "enabled": False}],
}
SONNET_UPSTREAM = "claude-sonnet-4-5-20250929"  # the catalog's upstream id for anthropic/claude-sonnet-4.5
ROUTER_FIELDS = ("provider", "models", "session_id", "trace", "user", "plugins")


def test_upstream_receives_every_field_minus_router_fields_with_model_rewritten(client, upstream):
    response = client.post("/v1/messages", json=EVERY_FIELD)
    assert response.status_code == 200, response.text
    received = upstream.requests[-1]
    expected = {k: v for k, v in EVERY_FIELD.items() if k not in ROUTER_FIELDS}
    expected["model"] = SONNET_UPSTREAM
    assert received.path == "/v1/messages"
    assert received.json() == expected


def test_forwarded_bytes_are_the_clients_own_not_reserialised(client, upstream):
    raw = (b'{ "model" : "anthropic/claude-sonnet-4.5",\n  "max_tokens":  1024, "temperature": 0.50,'
           b' "messages": [{"role": "user", "content": "caf\\u00e9 \\"model\\": 1"}],'
           b' "provider": {"sort": "price"}, "x": 1.0e2 }')
    response = client.post("/v1/messages", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    body = upstream.requests[-1].body
    assert body == (b'{ "model" : "claude-sonnet-4-5-20250929",\n  "max_tokens":  1024, "temperature": 0.50,'
                    b' "messages": [{"role": "user", "content": "caf\\u00e9 \\"model\\": 1"}],'
                    b' "x": 1.0e2 }')


def test_dated_native_id_goes_unchanged_to_its_vendor(client, upstream):
    response = client.post("/v1/messages", json={"model": "claude-sonnet-4-5-20250929", "max_tokens": 5,
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert upstream.requests[-1].json()["model"] == "claude-sonnet-4-5-20250929"
    assert response.json()["model"] == "anthropic/claude-sonnet-4.5"


def test_versions_betas_and_the_providers_key_are_forwarded(gateway, upstream):
    headers = [("authorization", f"Bearer {TEAM_KEY}"), ("anthropic-version", "2023-06-01"),
               ("anthropic-beta", "prompt-caching-2024-07-31, tools-2024-04-04"),
               ("anthropic-beta", "output-128k-2025-02-19"), ("content-type", "application/json")]
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    response = httpx.post(gateway.url + "/v1/messages?beta=true", content=body, headers=headers)
    assert response.status_code == 200
    received = upstream.requests[-1]
    assert received.query == "beta=true"
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["anthropic-beta"] == "prompt-caching-2024-07-31,tools-2024-04-04,output-128k-2025-02-19"
    assert received.headers["x-api-key"] == "sk-upstream-secret-anthropic"
    assert "authorization" not in received.headers


def test_anthropic_version_defaults_when_absent(client, upstream):
    client.post("/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 5,
                                      "messages": [{"role": "user", "content": "hi"}]})
    assert upstream.requests[-1].headers["anthropic-version"] == "2023-06-01"


def test_json_answer_names_provider_router_model_and_cost(client, upstream):
    upstream.enqueue(json_reply(message_body("Hi!", input_tokens=1000, output_tokens=100, cache_read=2000,
                                             cache_write=400, content=[
                                                 {"type": "tool_use", "id": "toolu_9", "name": "f",
                                                  "input": {"model": "inner"}}])))
    response = client.post("/v1/messages", json={"model": "anthropic/claude-sonnet-4.5", "max_tokens": 5,
                                                 "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["x-gateway-provider"] == "anthropic"
    message = response.json()
    assert message["model"] == "anthropic/claude-sonnet-4.5"
    assert message["provider"] == "anthropic"
    assert message["content"][0]["input"] == {"model": "inner"}
    # claude-sonnet-4.5 on anthropic: input 3, output 15, cache write 3.75, cache read 0.30 USD / Mtok
    expected = (1000 * 3 + 100 * 15 + 400 * 3.75 + 2000 * 0.30) / 1e6
    assert abs(message["usage"]["cost"] - expected) < 1e-9
    assert message["usage"]["cache_read_input_tokens"] == 2000


def test_a_200_event_stream_reaches_the_client_event_for_event(client, upstream):
    pieces = [f"w{i} " for i in range(193)]
    events = stream_events(pieces, pings=2)
    assert len(events) == 200
    upstream.enqueue(sse_reply(events, delay_between=0.0))
    with client.stream("POST", "/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 300,
                                                     "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        received = r.read()
    got = [e + b"\n\n" for e in received.split(b"\n\n") if e]
    assert len(got) == 200
    assert got[1:] == events[1:]
    start = json.loads(got[0].split(b"data: ", 1)[1])
    original = json.loads(events[0].split(b"data: ", 1)[1])
    assert start["message"].pop("provider") == "anthropic"
    assert start["message"].pop("model") == "anthropic/claude-sonnet-4.5"
    original["message"].pop("model")
    assert start == original


# Alone: the first event must come within 0.35 s, which another worker's load could use up.
@pytest.mark.alone
def test_stream_events_are_not_buffered(client, upstream):
    events = stream_events(["a", "b", "c"])
    upstream.enqueue(sse_reply(events, delay_between=0.4))
    import time
    with client.stream("POST", "/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 30, "stream": True,
                                                     "messages": [{"role": "user", "content": "x"}]}) as r:
        started = time.monotonic()
        first = next(r.iter_raw())
        assert time.monotonic() - started < 0.35
        assert first.startswith(b"event: message_start")
    # The abandoned stream ends upstream too, before the next test: its disconnect, counted late on a
    # loaded machine, would count in test_client_disconnect_cancels_the_upstream_call's.
    from tests.fakes.base import wait_for
    assert wait_for(lambda: upstream.disconnects == 1, timeout=5)


def test_upstream_cut_mid_stream_ends_with_an_sse_error_event(client, upstream):
    events = stream_events(["a", "b", "c", "d"])
    upstream.enqueue(sse_reply(events[:5], cut=True))
    with client.stream("POST", "/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 30, "stream": True,
                                                     "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status_code == 200
        body = r.read()
    last = body.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\n")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "anthropic" in error["error"]["message"]
    assert b"sk-upstream" not in body


def test_stream_without_message_stop_ends_with_an_error_event(client, upstream):
    events = stream_events(["a"])
    upstream.enqueue(sse_reply(events[:-2]))
    with client.stream("POST", "/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 30, "stream": True,
                                                     "messages": [{"role": "user", "content": "x"}]}) as r:
        body = r.read()
    assert body.strip().split(b"\n\n")[-1].startswith(b"event: error\n")


def test_client_disconnect_cancels_the_upstream_call(client, upstream):
    from tests.fakes.base import wait_for
    events = stream_events([f"p{i}" for i in range(50)])
    upstream.enqueue(sse_reply(events, delay_between=0.05))
    with client.stream("POST", "/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 30, "stream": True,
                                                     "messages": [{"role": "user", "content": "x"}]}) as r:
        next(r.iter_raw())
    assert wait_for(lambda: upstream.disconnects == 1, timeout=3)


def test_upstream_error_event_before_any_output_becomes_an_error_status(client, upstream):
    upstream.enqueue(sse_reply([event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                           "message": "Overloaded"}})]))
    response = client.post("/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 30, "stream": True,
                                                 "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"


def test_upstream_model_in_answer_is_replaced_by_router_id(client, upstream):
    upstream.enqueue(json_reply(message_body(model=UPSTREAM_MODEL)))
    response = client.post("/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 5,
                                                 "messages": [{"role": "user", "content": "hi"}]})
    assert response.json()["model"] == "anthropic/claude-sonnet-4.5"


def test_client_leaving_a_slow_json_request_cancels_the_upstream_call(client, upstream):
    import httpx as _httpx
    from tests.fakes.base import Reply, wait_for
    upstream.enqueue(Reply(delay_first=2.5, chunks=[b"{}"]))
    try:
        client.post("/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 5,
                                          "messages": [{"role": "user", "content": "x"}]}, timeout=1.2)
    except _httpx.ReadTimeout:
        pass
    # the gateway closed its upstream connection: the fake's late answer finds nobody to write to
    assert wait_for(lambda: upstream.disconnects == 1, timeout=4)
