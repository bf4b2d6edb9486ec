"""The input bound a budget reservation is made of: a body's bytes for its text, and item by item
what the bytes do not show."""
from __future__ import annotations

import base64

import orjson

from policies.limits import (
    TOOL_PROMPT_MAX_TOKENS,
    InputCeilings,
    census,
    has_unbounded_content,
    input_bound,
)

CEILINGS = InputCeilings(image=1_600, item=50_000, server_tool_use=20_000, server_tool_uses=5)


def bound(body: dict, counted: int | None = None) -> int:
    raw = orjson.dumps(body)
    found = census(body, CEILINGS) if has_unbounded_content(raw) else None
    return input_bound(len(raw), tools=b'"tools"' in raw, found=found, ceilings=CEILINGS, counted=counted)


def message(*content) -> dict:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": list(content)}]}


def test_a_text_body_is_bounded_by_its_bytes_without_being_walked():
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "héllo, 世界 " * 50}]}
    raw = orjson.dumps(body)
    assert not has_unbounded_content(raw)
    assert bound(body) == len(raw)  # a token covers at least one byte of UTF-8 text


def test_tools_add_the_largest_documented_tool_prompt():
    body = {**message({"type": "text", "text": "hi"}),
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    assert bound(body) == len(orjson.dumps(body)) + TOOL_PROMPT_MAX_TOKENS


def test_a_base64_image_counts_at_the_per_image_maximum_not_as_text():
    data = base64.b64encode(b"\x89PNG" + b"\0" * 30_000).decode()
    body = message({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
                   {"type": "text", "text": "what is this?"})
    assert bound(body) == len(orjson.dumps(body)) - len(data) + 1_600


def test_content_only_the_upstream_can_size_counts_at_the_item_ceiling_each():
    body = message({"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
                   {"type": "document", "source": {"type": "file", "file_id": "file_1"}},
                   {"type": "container_upload", "file_id": "file_2"},
                   {"type": "tool_result", "tool_use_id": "t", "content": [
                       {"type": "document", "source": {"type": "url", "url": "https://x.example/a.pdf"}}]})
    found = census(body, CEILINGS)
    assert found.unknown == 4 and found.needs_upstream
    assert bound(body) == len(orjson.dumps(body)) + 4 * 50_000


def test_the_upstreams_count_replaces_the_ceilings():
    body = message({"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}})
    assert bound(body, counted=2_345) == 2_345


def test_server_tools_count_their_uses_at_the_per_use_ceiling():
    body = {**message({"type": "text", "text": "search"}),
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                      {"type": "web_fetch_20250910", "name": "web_fetch"}]}
    found = census(body, CEILINGS)
    assert found.server_tool_uses == 3 + 5
    assert bound(body) == len(orjson.dumps(body)) + TOOL_PROMPT_MAX_TOKENS + 8 * 20_000
    assert bound(body, counted=900) == 900 + 8 * 20_000  # the count cannot know the results


def test_text_documents_are_text():
    body = message({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "abc"}})
    found = census(body, CEILINGS)
    assert (found.unknown, found.images, found.binary_bytes) == (0, 0, 0)
    assert bound(body) == len(orjson.dumps(body))


def test_a_tool_schema_property_named_url_is_no_reason_to_walk_the_body():
    body = {**message({"type": "text", "text": "fetch it"}),
            "tools": [{"name": "fetch", "input_schema": {"type": "object", "properties": {
                "url": {"type": "string"}, "file": {"type": "string"}, "image": {"type": "array"}}}}]}
    assert not has_unbounded_content(orjson.dumps(body))


def test_any_type_the_bytes_may_not_bound_is_walked_however_it_is_written():
    walked = [
        b'{"messages":[{"role":"user","content":[{"type" : "image","source":{"type":"url","url":"u"}}]}]}',
        b'{"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3}]}',
        b'{"messages":[{"role":"user","content":[{"t\\u0079pe":"document"}]}]}',  # an escaped key
        b'{"messages":[{"role":"user","content":[{"type":"te\\u0078t"}]}]}',  # an escaped value
        b'{"messages":[{"role":"user","content":[{"type":"something_new"}]}]}',  # unknown: the safe side
    ]
    for raw in walked:
        assert has_unbounded_content(raw), raw
    assert has_unbounded_content(b'{"mcp_servers":[{"type":"url","url":"u"}]}')
    assert has_unbounded_content(b'{"messages":[]}', mcp_servers=True)
    quoted = b'{"messages":[{"role":"user","content":[{"type":"text","text":"say \\"type\\": \\"url\\""}]}]}'
    assert not has_unbounded_content(quoted)  # inside a string, not a member
    assert not has_unbounded_content(b'{"messages":[{"role":"user","content":"caf\\u00e9"}]}')
