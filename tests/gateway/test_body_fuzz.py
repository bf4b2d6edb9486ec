"""Fuzzing `POST /v1/messages`: whatever the body, the answer is a 2xx or a 4xx in the envelope.

A real gateway (uvicorn, real sockets) in front of the Anthropic fake gets a few thousand seeded
mutations of valid bodies (bytes flipped, inserted, deleted, repeated and cut; members replaced
by hostile values: deep nesting, huge and odd numbers, invalid UTF-8, lone surrogates, duplicate
keys) and bodies that hypothesis builds from the request's own member names. The fake answers
what it cannot parse with a 400, as api.anthropic.com does. Every run sends the same bodies.
"""
from __future__ import annotations

import json
import random

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TEAM_KEY, base_settings
from tests.fakes.anthropic import AnthropicFake, error_reply
from tests.fakes.base import RecordedRequest, Reply
from tests.gateway_server import GatewayThread

SEED = 20261201
MUTATIONS = 3000
MEMBERS = ("model", "max_tokens", "messages", "stream", "system", "tools", "metadata", "temperature",
           "trace", "session_id", "user", "provider", "models", "plugins", "stop_sequences", "tool_choice")


class StrictAnthropicFake(AnthropicFake):
    """Answers a body it cannot read with a 400 in the envelope, as the real API does."""

    def auto_reply(self, request: RecordedRequest) -> Reply:
        try:
            body = request.json()
        except ValueError:
            return error_reply(400, "invalid_request_error", "There was an error parsing the body")
        if not isinstance(body, dict) or not isinstance(body.get("max_tokens"), int):
            return error_reply(400, "invalid_request_error", "max_tokens: Field required")
        return super().auto_reply(request)


@pytest.fixture(scope="module")
def fuzzed():
    with StrictAnthropicFake() as fake, GatewayThread(**base_settings(fake.url)) as gw, \
            httpx.Client(base_url=gw.url, headers={"x-api-key": TEAM_KEY, "content-type": "application/json"},
                         timeout=30) as client:
        yield client


def assert_answer_is_well_formed(response: httpx.Response, sent: bytes) -> None:
    where = f"body {sent[:300]!r}"
    assert response.status_code < 500, f"{response.status_code} {response.text[:300]} for {where}"
    if response.status_code < 300:
        return
    assert 400 <= response.status_code < 500, where
    assert response.headers.get("content-type") == "application/json", where
    error = response.json()
    assert error["type"] == "error", where
    assert isinstance(error["error"]["type"], str) and error["error"]["type"], where
    assert isinstance(error["error"]["message"], str), where


# -- seeds and mutations ----------------------------------------------------------------------------
SEEDS = [
    {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    {"model": "anthropic/claude-opus-4.8", "max_tokens": 8, "stream": True,
     "messages": [{"role": "user", "content": [{"type": "text", "text": "stream"}]}]},
    {"model": "claude-haiku-4-5", "max_tokens": 32, "system": [{"type": "text", "text": "be brief",
                                                                 "cache_control": {"type": "ephemeral"}}],
     "metadata": {"user_id": "u-1"}, "temperature": 0.2, "stop_sequences": ["\n\n"],
     "tools": [{"name": "get", "description": "d", "input_schema": {"type": "object", "properties": {
         "q": {"type": "string"}}}}], "tool_choice": {"type": "auto"},
     "messages": [{"role": "user", "content": "call get"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get", "input": {}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]},
    {"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
     "trace": {"trace_id": "tr-1", "span_name": "s", "tags": [1, 2.5, True, None]}, "session_id": "sess-1",
     "user": "alice", "provider": {"order": ["anthropic"], "allow_fallbacks": False},
     "models": ["anthropic/claude-haiku-4.5"], "plugins": []},
]
SEED_BYTES = [json.dumps(s).encode() for s in SEEDS] + [json.dumps(s, separators=(",", ":")).encode()
                                                        for s in SEEDS]

HOSTILE_VALUES = [
    b"[" * 3000, b"[" * 3000 + b"]" * 3000, b'{"a":' * 1500 + b"1" + b"}" * 1500, b"[" * 300 + b"]" * 300,
    b'{"a":' * 300 + b"1" + b"}" * 300, b"1e400", b"-1e400", b"1" + b"0" * 400, str(2**64).encode(),
    str(10**15).encode(), b"-1", b"0", b"-0", b"0.5", b"1.0", b"1e3", b"true", b"false", b"null", b'""',
    b'"\\ud800"', b'"\\udc00\\ud800"', b'"\xff\xfe"', b'"\xc3\x28"', b'"' + b"x" * 20000 + b'"', b"[]", b"{}",
    b"[null]", b'[{"role":"user"}]', b'{"trace_id":' + b"9" * 30 + b"}", b'"\\u0000"', b"NaN", b"Infinity",
    b'"' + "é".encode() * 300 + b'"', b'{"max_price":{"prompt":1' + b"0" * 400 + b',"completion":"1e999"}}',
    b'{"preferred_max_latency":{"p50":1' + b"0" * 400 + b"}}", b'{"sort":{"by":"price","partition":[]}}',
    b"[" + b"1," * 5000 + b"1]", b'{"' + b'":1,"'.join(b"k%d" % i for i in range(500)) + b'":1}',
]
BYTES = b'[]{}",:\\0123456789-+.eE \t\n\xff\x80\x00tfnu'


def replace_member(raw: bytes, rng: random.Random) -> bytes:
    """The body with one member's value (or a new member) swapped for a hostile value."""
    name = rng.choice(MEMBERS).encode()
    value = rng.choice(HOSTILE_VALUES)
    body = json.loads(raw)
    kept = b",".join(json.dumps(k).encode() + b":" + json.dumps(v).encode()
                     for k, v in body.items() if k.encode() != name)
    member = b'"' + name + b'":' + value
    if rng.random() < 0.2:  # the member twice: the decoder keeps the last one
        member = member + b',"' + name + b'":' + json.dumps(body.get(name.decode(), 1)).encode()
    return b"{" + kept + (b"," if kept else b"") + member + b"}"


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] = rng.choice(BYTES)
        elif kind == 1:
            data[at:at] = rng.choice(HOSTILE_VALUES)[:rng.randint(1, 4000)]
        elif kind == 2:
            del data[at:at + rng.randint(1, 40)]
        elif kind == 3:
            end = min(len(data), at + rng.randint(1, 60))
            data[at:at] = bytes(data[at:end]) * rng.randint(2, 50)
        elif kind == 4:
            del data[at:]
        else:
            data[at:at] = bytes([rng.choice(BYTES)])
    return bytes(data)


def mutated_bodies(count: int) -> list[bytes]:
    rng = random.Random(SEED)
    bodies = []
    for i in range(count):
        seed = rng.choice(SEED_BYTES)
        bodies.append(replace_member(seed, rng) if i % 3 == 0 else mutate(seed, rng))
    return bodies


def test_thousands_of_mutated_bodies_never_get_a_5xx(fuzzed):
    statuses: dict[int, int] = {}
    for raw in mutated_bodies(MUTATIONS):
        response = fuzzed.post("/v1/messages", content=raw)
        assert_answer_is_well_formed(response, raw)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    # The mutations reach past the parser too: some bodies are served, most are refused.
    assert statuses.get(200, 0) > 50 and statuses.get(400, 0) > MUTATIONS // 3, statuses


# -- hypothesis: bodies built from the request's own member names -----------------------------------
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
           | st.sampled_from(["claude-sonnet-4-5", "anthropic/claude-opus-4.8", "user", "assistant", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(MEMBERS), inner, max_size=4),
                      max_leaves=20)
request_bodies = st.dictionaries(st.sampled_from(MEMBERS) | st.text(max_size=10), values, max_size=8)
hostile_bytes = st.sampled_from(HOSTILE_VALUES)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=request_bodies, model=st.sampled_from(["claude-sonnet-4-5", None]),
       max_tokens=st.one_of(st.none(), st.integers(min_value=-5, max_value=2**65), hostile_bytes),
       stream=st.sampled_from([None, True, False, "yes"]))
def test_generated_bodies_never_get_a_5xx(fuzzed, body, model, max_tokens, stream):
    members = {k.encode(): json.dumps(v).encode() for k, v in body.items()}
    if model is not None:
        members[b"model"] = json.dumps(model).encode()
        members.setdefault(b"messages", b'[{"role":"user","content":"hi"}]')
    if max_tokens is not None:
        members[b"max_tokens"] = max_tokens if isinstance(max_tokens, bytes) else str(max_tokens).encode()
    if stream is not None:
        members[b"stream"] = json.dumps(stream).encode()
    raw = b"{" + b",".join(json.dumps(k.decode()).encode() + b":" + v for k, v in members.items()) + b"}"
    assert_answer_is_well_formed(fuzzed.post("/v1/messages", content=raw), raw)
