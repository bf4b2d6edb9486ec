"""A passed-through stream's events name the router's model and the provider, and its usage the
cost, without touching what the events carry as text."""
from __future__ import annotations

import orjson

from providers.protocol import EventLabels

LABELS = EventLabels("openai/gpt-5.4", "openai")


def data(event: bytes) -> dict:
    return orjson.loads(event[len(b"data: "):].strip())


def test_each_model_member_names_the_router_model_and_the_provider_but_not_text_quoting_one():
    text = 'write "model":"x" and "usage":{}'
    block = (b'data: {"id":"c1","model":"gpt-5.4-2026-03-05","choices":[{"delta":{"content":'
             + orjson.dumps(text) + b'}}]}\n\ndata: {"id":"c1", "model" : "gpt-5.4-2026-03-05","choices":[]}\n\n')
    first, second = LABELS.events(block).split(b"\n\n")[:2]
    assert data(first)["model"] == "openai/gpt-5.4" and data(first)["provider"] == "openai"
    assert data(first)["choices"][0]["delta"]["content"] == text
    assert data(second)["model"] == "openai/gpt-5.4"


def test_events_that_name_a_provider_keep_it():
    block = b'data: {"model":"m","provider":"Upstream Inc"}\n\n'
    assert data(LABELS.events(block)) == {"model": "openai/gpt-5.4", "provider": "Upstream Inc"}


def test_the_cost_goes_first_in_the_one_usage_object():
    assert data(EventLabels.with_cost(b'data: {"usage":{"prompt_tokens":5}}\n\n', 0.25)) == \
        {"usage": {"cost": 0.25, "prompt_tokens": 5}}
    assert data(EventLabels.with_cost(b'data: {"usage": { }}\n\n', 0.25)) == {"usage": {"cost": 0.25}}
    two = b'data: {"usage":{"a":1},"x":{"usage":{"b":2}}}\n\n'
    assert EventLabels.with_cost(two, 0.25) == two  # which one is the answer's is not guessed
