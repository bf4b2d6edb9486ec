"""Splicing top-level members of JSON bytes: the result parses, and only the named members change."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.jsonedit import (
    EditError,
    edit_members,
    edit_top_level,
    label_answer,
    member_span,
    top_level_spans,
    top_level_values,
)

ROUTER = ["provider", "models", "session_id", "trace", "user", "plugins"]


def test_only_the_top_level_member_is_rewritten():
    raw = (b'{"model": "a", "tools": [{"input_schema": {"properties": {"model": {"type": "string"}}}}],'
           b' "messages": [{"role": "user", "content": "\\"model\\": \\"x\\""}]}')
    out = edit_members(raw, replace={"model": "b"})
    assert out == raw.replace(b'"model": "a"', b'"model": "b"', 1)


@pytest.mark.parametrize("raw", [
    b'{"a":1, "user":"u", "plugins":[1]}',
    b'{"user":"u","a":1,"plugins":[1], "b":2}',
    b'{"user":1}',
    b'{"a":1,"user":2,"b":3,"plugins":4}',
    b'{ "provider" : {"order": ["x", {"y": "}"}]} , "a" : [1, "]"] }',
])
def test_removed_members_leave_valid_json(raw):
    out = edit_members(raw, remove=ROUTER)
    expected = {k: v for k, v in orjson.loads(raw).items() if k not in ROUTER}
    assert orjson.loads(out) == expected


def test_append_and_extend_in_one_pass():
    raw = b'{"id":"m","model":"x","usage":{"input_tokens":3}}'
    out = edit_members(raw, replace={"model": "r"}, append={"provider": "p"}, extend={"usage": {"cost": 0.5}})
    assert out == b'{"id":"m","model":"r","usage":{"input_tokens":3,"cost":0.5},"provider":"p"}'


def test_duplicate_keys_edit_the_last_like_parsers_read_it():
    raw = b'{"model":"a","x":{"model":"n"},"model":"b"}'
    assert member_span(raw, "model")[1:] == (raw.rindex(b'"b"'), raw.rindex(b'"b"') + 3)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["model", "messages", "max_tokens", *ROUTER, "x"]), json_values,
                            min_size=1),
       indent=st.booleans())
def test_any_object_keeps_every_other_member(body, indent):
    raw = orjson.dumps(body, option=orjson.OPT_INDENT_2 if indent else 0)
    out = edit_members(raw, replace={"model": "new"}, remove=ROUTER)
    expected = {k: v for k, v in body.items() if k not in ROUTER}
    if "model" in expected:
        expected["model"] = "new"
    assert orjson.loads(out) == expected


# -- answers: the spliced result reads like the parsed answer with the router's members ----------
def expected_answer(parsed: dict, model: str, provider: str, cost: float) -> dict:
    out = dict(parsed)
    if "model" in out:
        out["model"] = model
    if isinstance(out.get("usage"), dict):
        out["usage"] = {**out["usage"], "cost": cost}
    out.setdefault("provider", provider)
    return out


@pytest.mark.parametrize("raw", [
    b'{"model":"a","usage":{"x":1},"model":"b","usage":{"y":2}}',
    b'{"a":1,"usage":{},"a":{"b":2}}',
    b'{"usage":{"a":1},"model":"m","usage":{"b":2}}',
    b'{"content":[{"model":"inner"}],"model":"m","usage":{"usage":{"model":1}}}',
    b'{"model":"m","usage":{"x":{"usage":{}}}, "z": {"usage": {"q": 1}}}',
    b'{ "id" : "x" , "model" : "m" , "usage" : { } }\n',
    b'{"model":"m","text":"\\"usage\\": {}","usage":{"n":1}}',
    # Chat completions: `usage` with only scalars after it.
    b'{"id":"c","model":"m","choices":[{"usage":{"z":1}}],"usage":{"n":1},"system_fingerprint":"fp"}',
    b'{"model":"m","usage":{"a":1},"x":1,"usage":{"b":2},"y":"usage"}',
    b'{"model":"m","usage":{"n":1},"s":"\\"usage\\":{\\"n\\":1}","t":null}',
])
def test_answer_edits_read_as_the_parsed_answer_whatever_the_layout(raw):
    parsed = orjson.loads(raw)
    out = label_answer(raw, parsed, model="router/m", provider="p", cost=0.25)
    assert orjson.loads(out) == expected_answer(parsed, "router/m", "p", 0.25)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["id", "type", "model", "content", "stop_reason", "usage", "x"]),
                            json_values, min_size=1),
       usage=st.dictionaries(st.sampled_from(["input_tokens", "usage", "model", "cache"]), json_values, max_size=4),
       usage_last=st.booleans(), indent=st.booleans())
def test_any_answer_gains_exactly_model_provider_and_cost(body, usage, usage_last, indent):
    body.pop("usage", None)
    body = {**body, "usage": usage} if usage_last else {"usage": usage, **body}
    raw = orjson.dumps(body, option=orjson.OPT_INDENT_2 if indent else 0)
    out = label_answer(raw, orjson.loads(raw), model="router/m", provider="p", cost=0.125)
    decoded = orjson.loads(out)
    assert decoded == expected_answer(body, "router/m", "p", 0.125)
    assert list(decoded) == list(body) + ["provider"]


# -- requests: members located exactly from the decoder's reading --------------------------------
@pytest.mark.parametrize("raw", [
    b'{"messages":[{"role":"user","content":"hi"}],"tools":[{"input_schema":{"properties":{"model":{"enum":["a"]}}}}],'
    b'"model":"claude-x","user":"u1","max_tokens":5}',
    b'{"tools":[{"model":"claude-x"}],"model":"claude-x","user":{"user":"u1"}}',
    b'{"model":"cheap","messages":[],"model":"claude-x","user":"u1"}',
    b'{"metadata":{"user":"u1"},"model":"claude-x","user":"u1"}',
    b'{"model": "claude-x", "user": "u1", "n": [1, 2]}',
    b' {\n "user" : "u1" ,\t"model":\r\n"claude-x"  }\n',
    b'{"us\\u0065r":"u1","model":"claude-x","text":"{\\"model\\":\\"claude-x\\"}"}',
    b'{"user":"u1","model":"claude-x"}',
])
def test_request_edits_touch_only_the_top_level(raw):
    from providers.anthropic import upstream_body
    decoded = orjson.loads(raw)  # keeps the last of duplicates, like the request decoder
    out = upstream_body(raw, "upstream-x", client_model="claude-x", router_fields=["user"],
                        values=top_level_values(raw))
    expected = {k: v for k, v in decoded.items() if k != "user"}
    expected["model"] = "upstream-x"
    assert orjson.loads(out) == expected


@pytest.mark.parametrize(("raw", "edited"), [
    (b'{"model":"m","max_tokens":5,"user":"u"}', b'{"model":"up","max_tokens":5}'),
    (b'{"model": "m", "max_tokens": 5, "user": "u"}\n', b'{"model": "up", "max_tokens": 5}\n'),
    (b'{\n  "user": "u",\n  "model": "m"\n}', b'{\n  "model": "up"\n}'),
    (b'{"model":"m","n":1.50e3,"s":"\\u00e9"}', b'{"model":"up","n":1.50e3,"s":"\\u00e9"}'),
])
def test_request_edits_keep_every_other_byte(raw, edited):
    assert edit_top_level(raw, top_level_values(raw), replace={"model": "up"}, remove=["user"]) == edited


def test_the_walk_locates_every_member_by_the_decoders_lengths():
    raw = b'{ "model" : "m", "tools" : [{"model": "x"}], "n" : 1.50e3 }'
    spans = top_level_spans(raw, top_level_values(raw))
    assert {k: raw[s:e] for k, (_, s, e) in spans.items()} == \
        {"model": b'"m"', "tools": b'[{"model": "x"}]', "n": b"1.50e3"}
    assert [raw[at:at + 3] for at, _, _ in spans.values()] == [b'"mo', b'"to', b'"n"']


@pytest.mark.parametrize("raw", [
    b'{"model":"a","model":"b"}',          # a duplicate: the decoder dropped the first value
    b'{"model":"ab","x":1,"model":"c"}',
    b'{"model":"a","model":"a"}',
])
def test_members_the_decoder_did_not_keep_are_refused(raw):
    values = top_level_values(raw)
    with pytest.raises(EditError):
        top_level_spans(raw, values)
    with pytest.raises(EditError):
        edit_top_level(raw, values, replace={"model": "up"})


def test_a_value_the_decoder_did_not_read_is_refused():
    raw = b'{"model":"a","x":123}'
    values = top_level_values(raw)
    values["x"] = top_level_values(b'{"x":12}')["x"]  # a shorter value at the same place
    with pytest.raises(EditError):
        top_level_spans(raw, values)


def test_a_duplicate_model_cannot_smuggle_another_model_upstream():
    """Routing and billing see the last `model`, as the decoder does; the upstream must get the
    routed model, whatever the duplicates say."""
    from providers.anthropic import upstream_body
    raw = b'{"model":"expensive","messages":[],"model":"cheap"}'
    out = upstream_body(raw, "cheap-upstream", client_model="cheap", router_fields=[], values=top_level_values(raw))
    assert out.count(b'"model"') == 1 and orjson.loads(out)["model"] == "cheap-upstream"


@settings(max_examples=150, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["model", "messages", "tools", "user", "x"]), json_values, min_size=1),
       nested=st.sampled_from(["model", "user"]), layout=st.sampled_from(["compact", "spaced", "indent"]))
def test_request_edits_with_any_nesting_keep_every_other_member(body, nested, layout):
    import json

    from providers.anthropic import upstream_body
    body = {"tools": [{nested: body.get(nested, "v")}], **body, "model": "m"}
    raw = {"compact": orjson.dumps(body), "spaced": json.dumps(body).encode(),
           "indent": orjson.dumps(body, option=orjson.OPT_INDENT_2)}[layout]
    out = upstream_body(raw, "up", client_model="m", router_fields=[k for k in ("user",) if k in body],
                        values=top_level_values(raw))
    expected = {k: v for k, v in body.items() if k != "user"}
    expected["model"] = "up"
    assert orjson.loads(out) == expected
