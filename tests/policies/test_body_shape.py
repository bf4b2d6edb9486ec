"""The typed census of a body's bytes finds what the walk of the decoded body finds, for every shape
the API allows, and declines the shapes it does not know so that the walk takes them."""
from __future__ import annotations

import base64

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.request import MEMBER_CENSUS_BYTES, InboundHeaders, parse_messages_request
from policies.body_shape import _Remembered, _system_shape, read_members_shape, read_shape, shape_problem
from policies.limits import InputCeilings, census
from providers.jsonedit import top_level_values

CEILINGS = InputCeilings(image=1_600, item=50_000, server_tool_use=20_000, server_tool_uses=5)

_text = st.text(max_size=40)
_data = st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())
_cache = st.sampled_from([{}, {"cache_control": {"type": "ephemeral"}}])


def _source(kind: str):
    options = [
        st.builds(lambda d: {"type": "base64", "media_type": "image/png", "data": d}, _data),
        st.builds(lambda u: {"type": "url", "url": "https://x.example/" + u}, _text),
        st.just({"type": "file", "file_id": "file_1"}),
    ]
    if kind == "document":
        options += [st.builds(lambda t: {"type": "text", "media_type": "text/plain", "data": t}, _text),
                    st.builds(lambda c: {"type": "content", "content": c}, st.lists(_inner_block, max_size=3))]
    return st.one_of(options)


_text_block = st.builds(lambda t, c: {"type": "text", "text": t, **c}, _text, _cache)
_image = st.builds(lambda s, c: {"type": "image", "source": s, **c}, _source("image"), _cache)
_inner_block = st.one_of(_text_block, _image)
_document = st.builds(lambda s, c: {"type": "document", "source": s, **c}, _source("document"), _cache)
_search_result = st.builds(lambda t: {"type": "search_result", "source": "https://x.example", "title": t,
                                      "content": [{"type": "text", "text": t}]}, _text)
_tool_result = st.builds(
    lambda c: {"type": "tool_result", "tool_use_id": "toolu_1", "content": c},
    st.one_of(_text, st.lists(st.one_of(_text_block, _image, _document, _search_result), max_size=3)))
_tool_use = st.builds(lambda t: {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": t}}, _text)
_server_result = st.one_of(
    st.just({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
             "content": [{"type": "web_search_result", "url": "https://x.example", "title": "t",
                          "encrypted_content": "abc", "page_age": None}]}),
    st.just({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
             "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}}),
    st.just({"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_2",
             "content": {"type": "code_execution_result", "stdout": "", "stderr": "", "return_code": 0,
                         "content": []}}))
_block = st.one_of(_text_block, _image, _document, _search_result, _tool_result, _tool_use, _server_result,
                   st.just({"type": "container_upload", "file_id": "file_2"}),
                   st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "sig"}, _text))
_message = st.builds(lambda role, content: {"role": role, "content": content},
                     st.sampled_from(["user", "assistant"]), st.one_of(_text, st.lists(_block, max_size=5)))
_tool = st.one_of(
    st.builds(lambda n: {"name": n or "f",
                         "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}}}, _text),
    st.builds(lambda u: {"type": "web_search_20250305", "name": "web_search", **u},
              st.sampled_from([{}, {"max_uses": 2}, {"max_uses": 0}, {"max_uses": True}, {"max_uses": "3"}])),
    st.builds(lambda c: {"type": "custom", "name": "g", "input_schema": {"type": "object"}, **c}, _cache),
    st.just({"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 1}))
_body = st.fixed_dictionaries(
    {"model": st.just("m"), "max_tokens": st.just(10), "messages": st.lists(_message, max_size=4)},
    optional={"system": st.one_of(_text, st.lists(_text_block, max_size=2)), "tools": st.lists(_tool, max_size=3),
              "cache_control": st.just({"type": "ephemeral"}),
              "mcp_servers": st.lists(st.just({"type": "url", "url": "https://mcp.example", "name": "m"}), max_size=2)})


@settings(max_examples=300, deadline=None)
@given(_body)
def test_the_typed_census_finds_what_the_walk_finds(body):
    raw = orjson.dumps(body)
    shape = read_shape(raw)
    assert shape is not None
    assert shape.census(CEILINGS) == census(body, CEILINGS)
    assert shape.caches == (b'"cache_control"' in raw)


@settings(max_examples=300, deadline=None)
@given(_body, _body)
def test_the_census_read_member_by_member_is_the_census_of_the_whole_body(body, earlier):
    # `earlier` goes first, so that its system prompt and tools are remembered when `body` is read.
    for raw in (orjson.dumps(earlier), orjson.dumps(body)):
        assert read_members_shape(top_level_values(raw)) == read_shape(raw)
    assert read_members_shape(top_level_values(b'{"tools":[{"name":"f","type":["x"]}]}')) is None


def test_a_remembered_system_prompt_is_taken_only_for_the_same_bytes():
    text = {"system": [{"type": "text", "text": "abcd"}], "messages": []}
    image = {"system": [{"type": "image", "text": "abc"}], "messages": []}  # as long, other bytes
    assert len(orjson.dumps(text)) == len(orjson.dumps(image))
    for body, kind in ((text, "text"), (image, "image"), (text, "text")):
        shape = read_members_shape(top_level_values(orjson.dumps(body)))
        assert shape is not None and shape.kinds == {kind}


def test_remembered_shapes_keep_to_their_budget_forgetting_the_oldest_first():
    shapes = _Remembered(_system_shape, largest=100, budget=250)
    system = [top_level_values(orjson.dumps({"system": [{"type": "text", "text": "x" * n}]}))["system"]
              for n in (40, 50, 60, 70, 200)]
    for value in system:
        assert shapes.shape(value).kinds == {"text"}
    assert shapes.size == len(system[2]) + len(system[3])  # the first two forgotten, the largest never kept
    assert shapes.shape(system[2]) is shapes.shape(system[2])


def test_a_repeated_member_is_checked_as_the_whole_body_decoder_checks_it():
    headers = InboundHeaders([], None, None, None, None)
    messages = b'"messages":[{"role":"user","content":"' + b"x" * MEMBER_CENSUS_BYTES + b'"}]'
    raw = b'{"model":"m","max_tokens":5,"system":[7],"system":"s",' + messages + b"}"
    request = parse_messages_request(raw, headers)
    assert request.spans is None  # `system` repeats: the top-level values are not all the members
    assert request.shape is None and request.shape_problem == "system.0: expected `object`, got `int`"
    once = parse_messages_request(b'{"model":"m","max_tokens":5,"system":"s",' + messages + b"}", headers)
    assert once.spans is not None and once.shape == read_shape(once.raw)


def test_kinds_name_every_block_and_tool_type_at_any_depth():
    body = {"system": [{"type": "text", "text": "s"}],
            "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "document", "source": {"type": "content", "content": [{"type": "image", "source": {
                        "type": "url", "url": "https://x.example/a.png"}}]}}]}]}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    shape = read_shape(orjson.dumps(body))
    assert shape is not None
    assert shape.kinds == {"text", "tool_result", "document", "image", "web_search_20250305"}
    assert shape.census(CEILINGS).unknown == 1  # the image by URL inside the document's content


def test_an_escaped_key_or_value_is_read_as_what_it_says():
    data = base64.b64encode(b"\0" * 3000).decode()
    raw = ('{"messages":[{"role":"user","content":[{"\\u0074ype":"\\u0069mage","source":{"type":"base64",'
           '"media_type":"image/png","data":"' + data + '"}}]}]}').encode()
    shape = read_shape(raw)
    assert shape is not None
    found = shape.census(CEILINGS)
    assert (found.images, found.binary_bytes) == (1, len(data))


def test_a_claude_code_turn_holds_text_alone():
    tools = [{"name": f"T{i}", "description": "d" * 200,
              "input_schema": {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}}}
             for i in range(15)]
    body = {"model": "m", "max_tokens": 32000, "tools": tools,
            "system": [{"type": "text", "text": "x" * 5000, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "fix it"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "T1",
                                                            "input": {"url": "https://x.example"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]}
    shape = read_shape(orjson.dumps(body))
    assert shape is not None
    assert shape.census(CEILINGS) == census(body, CEILINGS)
    assert not shape.census(CEILINGS).needs_upstream and shape.census(CEILINGS).binary_bytes == 0
    assert shape.kinds == {"text", "tool_use", "tool_result"}


def test_shapes_the_api_does_not_have_are_left_to_the_walk():
    for raw in (b'{"messages":[{"role":"user","content":[1]}]}',            # a block that is not an object
                b'{"messages":[{"role":"user","content":[{"type":7}]}]}',  # a type that is not a string
                b'{"messages":{"role":"user"}}',                           # messages that are not an array
                b'{"tools":[{"name":"f","type":["x"]}]}',
                b'{"system":5}',
                b'[1]', b'not json'):
        assert read_shape(raw) is None, raw


def test_the_problem_of_another_shape_names_where_as_the_api_does():
    assert shape_problem(b'{"messages":[{"role":"user","content":[{"type":"text","text":"a"},5]}]}') == \
        "messages.0.content.1: expected `object`, got `int`"
    assert shape_problem(b'{"tools":{"name":"f"}}') == "tools: expected `array | null`, got `object`"
    assert shape_problem(b"[1]") == "request body: expected `object`, got `array`"
    assert shape_problem(b'{"messages":[{"role":"user","content":"hi"}]}') is None
