"""Reading what a request asks of search, and the cheap test that spares every other request."""
from __future__ import annotations

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.search.intent import might_search, read_intent
from policies.body_shape import read_shape
from gateway.search.settings import SearchSettings

SETTINGS = SearchSettings(searxng_url="http://searx:8080", max_uses=5, price_per_search=0.01)


@pytest.mark.parametrize(("body", "model", "expected"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "claude-opus-4-8", False),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "m", True),
    ({"plugins": [{"id": "web"}]}, "m", True),
    ({}, "openai/gpt-5.4:online", True),
    ({"plugins": []}, "m", True),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_gw12", "name": "web_search", "input": {"query": "q"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_gw12", "content": []}]}]}, "m", True),
    ({"tools": [{"name": "WebSearch", "description": "Searches the web", "input_schema": {"type": "object"}}]},
     "claude-opus-4-8", False),
])
def test_only_requests_that_may_search_are_read(body, model, expected):
    raw = orjson.dumps(body)
    shape = read_shape(raw)
    assert shape is not None
    assert might_search(raw, model, body.keys(), shape.kinds) is expected
    assert might_search(raw, model, body.keys()) is expected  # a body the census cannot read: its bytes


def test_a_search_block_hidden_by_escapes_is_found_by_the_census():
    raw = (b'{"messages":[{"role":"assistant","content":[{"\\u0074ype":"web_search_tool_result",'
           b'"tool_use_id":"srvtoolu_gw1","content":[]}]}]}')
    shape = read_shape(raw)
    assert shape is not None and "web_search_tool_result" in shape.kinds
    assert might_search(raw, "m", orjson.loads(raw).keys(), shape.kinds)


def test_a_request_with_the_tool_reserves_its_max_uses_of_searches():
    intent = read_intent({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]}, "m")
    assert intent.searches and intent.max_searches(SETTINGS) == 2
    assert intent.reservation_usd(SETTINGS) == pytest.approx(0.02)
    unbounded = read_intent({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "m")
    assert unbounded.max_searches(SETTINGS) == 5


def test_online_and_plugins_are_read_together():
    intent = read_intent({"plugins": [{"id": "response-healing"}]}, "openai/gpt-5.4:online")
    assert intent.model == "openai/gpt-5.4" and intent.web is not None and intent.healing
    assert intent.max_searches(SETTINGS) == 1


def test_a_bad_plugin_in_the_request_is_a_400():
    with pytest.raises(InvalidRequest):
        read_intent({"plugins": [{"id": "nope"}]}, "m")
