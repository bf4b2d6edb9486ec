"""Properties over generated inputs: any JSON Schema reduces to one Google accepts, with its losses
reported; any answer's function calls and signed thoughts come back part for part on the next turn."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.gemini import GeminiOptions, from_gemini_response, to_gemini_request
from tests.fakes.gemini import Answer, function_call, request_problem, response_body, text, thought

SETTINGS = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
names = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=6)
UNSUPPORTED = ("additionalProperties", "$schema", "multipleOf", "uniqueItems", "patternProperties", "not",
               "exclusiveMinimum", "readOnly", "contentEncoding")
leaves = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(["string", "number", "integer", "boolean", "null"])),
    st.builds(lambda t, f: {"type": t, "format": f}, st.sampled_from(["string", "integer", "number"]),
              st.sampled_from(["uri", "email", "date-time", "int64", "double", "uuid"])),
    st.builds(lambda v: {"enum": v}, st.lists(st.one_of(names, st.integers(0, 9)), min_size=1, max_size=3)),
    st.builds(lambda v: {"const": v}, st.one_of(names, st.booleans())),
    st.just({"$ref": "#/$defs/Shared"}), st.just({"$ref": "#/$defs/Missing"}), st.just({}))


def with_extras(schema: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    extras = st.dictionaries(st.sampled_from(UNSUPPORTED + ("description", "title", "examples")),
                             st.one_of(st.booleans(), names, st.lists(names, max_size=2)), max_size=2)
    return st.builds(lambda s, e: {**e, **s}, schema, extras)


schemas = st.recursive(with_extras(leaves), lambda inner: st.one_of(
    st.builds(lambda p, r: {"type": "object", "properties": p, "required": r},
              st.dictionaries(names, inner, max_size=3), st.lists(names, max_size=2)),
    st.builds(lambda i: {"type": "array", "items": i}, inner),
    st.builds(lambda a: {"anyOf": a}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda a: {"oneOf": a}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda t: {"type": [t, "null"]}, st.sampled_from(["string", "object", "array"]))), max_leaves=12)


@SETTINGS
@given(properties=st.dictionaries(names, schemas, min_size=1, max_size=4), shared=schemas)
def test_any_json_schema_reduces_to_one_google_accepts(properties: dict[str, Any], shared: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": properties, "additionalProperties": False,
              "$defs": {"Shared": shared}}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "tool", "input_schema": schema}]}
    request, dropped = to_gemini_request(body, options=GeminiOptions())
    assert request_problem(request) is None
    assert "input_schema.additionalProperties" in dropped
    assert all(name.startswith("input_schema.") for name in dropped)


# Signatures as Google writes them: canonical, padded base64.
signatures = st.one_of(st.none(), st.from_regex(r"(?:[A-Za-z0-9+/]{4}){1,10}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",
                                                fullmatch=True))
parts = st.one_of(
    st.builds(lambda t, s: text(t, signature=s), names, signatures),
    st.builds(lambda t, s: thought(t, signature=s), names, signatures),
    st.builds(lambda n, a, s: function_call(n, a, signature=s), st.sampled_from(["get_weather", "run"]),
              st.dictionaries(names, st.one_of(names, st.integers(-1000, 1000)), max_size=2), signatures))


@SETTINGS
@given(answer_parts=st.lists(parts, min_size=1, max_size=8))
def test_function_calls_and_signed_thoughts_return_part_for_part(answer_parts: list[dict[str, Any]]) -> None:
    message = from_gemini_response(response_body(Answer(parts=answer_parts)), model="m", provider="google",
                                   message_id="msg_prop")
    results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}
               for b in message["content"] if b["type"] == "tool_use"]
    history = [{"role": "user", "content": "go"}, {"role": "assistant", "content": message["content"]}]
    if results:
        history.append({"role": "user", "content": results})
    request, _ = to_gemini_request({"model": "m", "max_tokens": 10, "messages": history},
                                   options=GeminiOptions(foreign_call_signature=None))
    sent = [p for c in request["contents"] if c["role"] == "model" for p in c["parts"]]

    def kept(part_list: list[dict[str, Any]]) -> list[Any]:
        # What must survive exactly: each call with its signature, and each signed run of thoughts' signature.
        return [(p["functionCall"]["name"], p["functionCall"]["args"], p.get("thoughtSignature")) if "functionCall" in p
                else p["thoughtSignature"] for p in part_list
                if "functionCall" in p or (p.get("thought") and p.get("thoughtSignature"))]

    assert kept(sent) == kept(answer_parts)
    if results:
        calls = [p["functionCall"]["name"] for p in answer_parts if "functionCall" in p]
        assert [p["functionResponse"]["name"] for p in request["contents"][-1]["parts"]] == calls
