"""Response healing: JSON answers bent by the model come back as JSON, with property tests over
arbitrary JSON values, and answers that are not JSON left alone."""
from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.search.healing import heal_json, heal_message, wants_json

# Keys and strings free of quotes and backslashes, so that a single-quoted rendering is unambiguous.
_plain = st.text(alphabet=st.characters(blacklist_characters="'\"\\", blacklist_categories=("Cs", "Cc")),
                 max_size=12)
_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | _plain | \
    st.floats(allow_nan=False, allow_infinity=False, width=32)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_plain, inner, max_size=4),
                       max_leaves=12)
_documents = st.lists(_values, max_size=4) | st.dictionaries(_plain, _values, max_size=4)


def _same(healed: str | None, value) -> bool:
    return healed is not None and orjson.loads(healed) == orjson.loads(orjson.dumps(value))


@given(_values)
def test_valid_json_is_returned_unchanged(value):
    text = json.dumps(value, indent=2)
    assert heal_json(text) == text


@given(_documents, st.sampled_from(["```json\n{}\n```", "```\n{}\n```", "Here is the JSON:\n{}\nHope it helps!",
                                    "Sure! ```json\n{}\n``` Done.", "  {}  "]))
def test_fences_and_surrounding_text_are_removed(value, wrapping):
    assert _same(heal_json(wrapping.replace("{}", json.dumps(value, indent=1))), value)


def _with_trailing_commas(value) -> str:
    """JSON with a comma after the last member of every non-empty object and array."""
    if isinstance(value, dict):
        return "{" + "".join(f"{json.dumps(k)}: {_with_trailing_commas(v)}, " for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + "".join(f"{_with_trailing_commas(v)}, " for v in value) + "]"
    return json.dumps(value)


@given(_documents)
def test_trailing_commas_are_dropped(value):
    assert _same(heal_json(_with_trailing_commas(value)), value)


def _single_quoted(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"'{k}': {_single_quoted(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_single_quoted(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value)


@settings(max_examples=200)
@given(st.dictionaries(_plain, _plain | st.integers(-10**12, 10**12) | st.booleans(), min_size=1, max_size=4))
def test_single_quotes_become_double_quotes(value):
    assert _same(heal_json(_single_quoted(value)), value)


@pytest.mark.parametrize(("text", "expected"), [
    ("{'name': 'it's fine', 'n': 1}", {"name": "it's fine", "n": 1}),
    ('{"says": "\'quoted\'", \'k\': \'say "hi"\'}', {"says": "'quoted'", "k": 'say "hi"'}),
    ("{'ok': True, 'none': None, 'no': False}", {"ok": True, "none": None, "no": False}),
    ('The answer: [1, 2, 3,] as asked', [1, 2, 3]),
    ('{"text": "a } inside", "b": [1,],}', {"text": "a } inside", "b": [1]}),
])
def test_repairs(text, expected):
    assert orjson.loads(heal_json(text)) == expected


@pytest.mark.parametrize("text", ["I cannot answer that.", '{"a": ', "[1, 2", ""])
def test_what_cannot_be_repaired_is_left_alone(text):
    assert heal_json(text) is None
    message = {"content": [{"type": "text", "text": text}]}
    assert heal_message(message) == (message, False)


def test_a_message_gets_one_healed_text_block_after_its_thinking():
    message = {"id": "m", "content": [{"type": "thinking", "thinking": "hmm", "signature": ""},
                                      {"type": "text", "text": "```json\n{\"a\": 1,"},
                                      {"type": "text", "text": "}\n```"}]}
    healed, changed = heal_message(message)
    assert changed and healed["id"] == "m"
    assert healed["content"] == [{"type": "thinking", "thinking": "hmm", "signature": ""},
                                 {"type": "text", "text": '{"a":1}'}]


def test_an_answer_that_is_json_already_is_not_touched():
    message = {"content": [{"type": "text", "text": '{"a": 1}'}]}
    assert heal_message(message) == (message, False)


@pytest.mark.parametrize(("body", "wanted"), [
    ({"output_config": {"format": {"type": "json_schema", "schema": {}}}}, True),
    ({"output_format": {"type": "json_schema", "schema": {}}}, True),
    ({"output_config": {"effort": "high"}}, False),
    ({}, False),
])
def test_healing_applies_to_requests_for_structured_output(body, wanted):
    assert wants_json(body) is wanted
