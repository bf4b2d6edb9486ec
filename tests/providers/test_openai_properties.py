"""Properties over generated inputs: any valid Anthropic request translates to a schema-valid chat request
with tool results in the right places; any re-chunking of an upstream stream yields the same events."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.openai_chat import ChatOptions, ChatStreamTranslator, to_chat_request
from tests.fakes.openai import (
    StreamScript,
    ToolCall,
    Usage,
    anthropic_events,
    assemble_message,
    chat_request_errors,
    chat_request_fields,
    stream_chunks,
)

SETTINGS = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TOOL_NAMES = ("get_weather", "search_docs", "run_code")
VOCABULARY = ("tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "top_k", "stop_sequences",
              "thinking", "effort", "output_format", "images", "documents", "user")
REPORTABLE = set(VOCABULARY) | {"server_tools"}
# Any Unicode scalar value but surrogates: emoji, CJK, combining marks, control characters.
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=16)
cache = st.one_of(st.just({}), st.just({"cache_control": {"type": "ephemeral"}}))


@st.composite
def images(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        source = {"type": "base64", "media_type": draw(st.sampled_from(["image/png", "image/jpeg", "image/webp"])),
                  "data": draw(st.from_regex(r"[A-Za-z0-9+/]{4,40}={0,2}", fullmatch=True))}
    else:
        name = draw(st.from_regex(r"[a-z0-9]{1,12}\.png", fullmatch=True))
        source = {"type": "url", "url": "https://example.com/" + name}
    return {"type": "image", "source": source, **draw(cache)}


text_blocks = st.builds(lambda t, c: {"type": "text", "text": t, **c}, text, cache)
documents = st.one_of(
    st.builds(lambda t: {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": t}}, text),
    st.just({"type": "document", "title": "a.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}))
tool_inputs = st.dictionaries(st.text(min_size=1, max_size=6), st.one_of(text, st.integers(), st.booleans()),
                              max_size=3)


@st.composite
def tool_results(draw: st.DrawFn, tool_id: str) -> dict[str, Any]:
    content = draw(st.one_of(text, st.lists(st.one_of(text_blocks, images()), max_size=3)))
    block = {"type": "tool_result", "tool_use_id": tool_id, "content": content}
    if draw(st.booleans()):
        block["is_error"] = True
    return block


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    pending: list[str] = []  # tool_use ids the next user turn must answer
    turns = draw(st.integers(1, 4))
    for turn in range(turns):
        results = [draw(tool_results(tool_id)) for tool_id in pending]
        pending = []
        extra = draw(st.lists(st.one_of(text_blocks, images(), documents), min_size=0 if results else 1, max_size=3))
        if turn == 0:
            extra.insert(0, draw(text_blocks))  # so that something always survives dropping
        content: Any = results + extra
        if not results and draw(st.booleans()):
            content = draw(text)
        messages.append({"role": "user", "content": content})
        if turn == turns - 1 and draw(st.booleans()):
            break
        blocks: list[dict[str, Any]] = []
        if draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": draw(text), "signature": "sig"})
        if draw(st.booleans()):
            blocks.append({"type": "redacted_thinking", "data": "opaque"})
        if draw(st.booleans()):
            blocks.append(draw(text_blocks))
        calls = draw(st.integers(0, 3))
        pending = [f"toolu_{turn}_{i}" for i in range(calls)]
        blocks += [{"type": "tool_use", "id": tool_id, "name": draw(st.sampled_from(TOOL_NAMES)),
                    "input": draw(tool_inputs)} for tool_id in pending]
        if not blocks:
            blocks.append(draw(text_blocks))
        messages.append({"role": "assistant", "content": blocks})
    if pending:
        messages.append({"role": "user", "content": [draw(tool_results(tool_id)) for tool_id in pending]})
    return messages


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "openai/gpt-5", "max_tokens": draw(st.integers(1, 64000)),
                            "messages": draw(conversations())}
    system = draw(st.one_of(st.none(), text, st.lists(text_blocks, min_size=1, max_size=3)))
    if system is not None:
        body["system"] = system
    tools = [{"name": name, "description": draw(text), "input_schema": {"type": "object"}, **draw(cache)}
             for name in draw(st.lists(st.sampled_from(TOOL_NAMES), unique=True, max_size=3))]
    if draw(st.booleans()):
        tools.append({"type": "web_search_20250305", "name": "web_search"})
    if tools:
        body["tools"] = tools
        named = st.builds(lambda n: {"type": "tool", "name": n}, st.sampled_from([t["name"] for t in tools]))
        choice = draw(st.one_of(st.just({"type": "auto"}), st.just({"type": "any"}), st.just({"type": "none"}), named))
        if draw(st.booleans()):
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    optional = {
        "stop_sequences": st.lists(text, max_size=6),
        "thinking": st.one_of(st.builds(lambda b: {"type": "enabled", "budget_tokens": b}, st.integers(1024, 60000)),
                              st.just({"type": "disabled"}), st.just({"type": "adaptive"})),
        "temperature": st.floats(0, 1), "top_p": st.floats(0, 1), "top_k": st.integers(1, 500),
        "metadata": st.builds(lambda u: {"user_id": u}, text),
        "output_config": st.builds(lambda e: {"effort": e}, st.sampled_from(["low", "medium", "high", "max"])),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    return body


options = st.builds(
    ChatOptions, max_tokens_field=st.sampled_from(["max_tokens", "max_completion_tokens"]),
    supported=st.frozensets(st.sampled_from(VOCABULARY)),
    reasoning=st.sampled_from(["reasoning_effort", "enable_thinking", "thinking", None]),
    reasoning_efforts=st.sampled_from([("low", "medium", "high"), ("minimal", "low", "medium", "high", "xhigh")]),
    reasoning_history=st.booleans())


@SETTINGS
@given(body=requests(), options=options, stream=st.booleans())
def test_any_valid_request_translates_to_a_schema_valid_chat_request(body: dict[str, Any], options: ChatOptions,
                                                                     stream: bool) -> None:
    request, dropped = to_chat_request(body, upstream_model="gpt-5", options=options, stream=stream)
    assert chat_request_errors(request) == []
    assert set(request) <= chat_request_fields() | {"top_k", "enable_thinking", "thinking_budget", "thinking"}
    assert set(dropped) <= REPORTABLE and len(dropped) == len(set(dropped))
    assert not {"top_k", "temperature", "top_p"} & set(dropped) & set(request)
    assert json.loads(json.dumps(request)) == request  # plain JSON data, nothing the executor cannot send
    if "tools" in dropped:
        assert "tools" not in request
    if set(dropped) <= {"server_tools", "images", "documents", "effort", "thinking"}:
        for name in ("temperature", "top_p", "top_k"):
            assert (name in request) == (name in body and name in options.supported)
    assert_tool_messages_answer_the_calls_just_before_them(request["messages"])


def assert_tool_messages_answer_the_calls_just_before_them(messages: list[dict[str, Any]]) -> None:
    open_calls: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_calls, "a tool message answers a call of the turn just before"
            open_calls.discard(message["tool_call_id"])
            continue
        assert not open_calls, f"calls left unanswered before a {message['role']} message"
        open_calls = {c["id"] for c in message.get("tool_calls", ())}
    assert not open_calls


# -- streams -------------------------------------------------------------------------------------

@st.composite
def upstream_streams(draw: st.DrawFn) -> tuple[StreamScript, list[dict[str, Any]]]:
    inputs = draw(st.lists(tool_inputs, max_size=3))
    ascii_only = draw(st.booleans())
    calls = []
    for i, value in enumerate(inputs):
        arguments = json.dumps(value, ensure_ascii=ascii_only)  # ascii_only puts \uXXXX escapes in the arguments
        cuts = sorted(draw(st.sets(st.integers(1, max(len(arguments) - 1, 1)), max_size=5)))
        fragments = [arguments[a:b] for a, b in zip([0, *cuts], [*cuts, len(arguments)], strict=True) if arguments[a:b]]
        calls.append(ToolCall(f"call_{i}", draw(st.sampled_from(TOOL_NAMES)), fragments))
    script = StreamScript(
        reasoning=draw(st.lists(text, max_size=3)), text=draw(st.lists(text, max_size=4)), tool_calls=calls,
        finish_reason=draw(st.sampled_from(["stop", "length", "tool_calls"])), ascii_only=ascii_only,
        usage=draw(st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**5), st.integers(0, 1000))))
    return script, inputs


def translate(pieces: list[bytes]) -> list[bytes]:
    translator = ChatStreamTranslator(model="openai/gpt-5", provider="openai", message_id="msg_prop")
    out: list[bytes] = []
    for piece in pieces:
        out += translator.feed(piece)
    return out + translator.finish()


@SETTINGS
@given(stream=upstream_streams(), data=st.data())
def test_any_rechunking_of_a_stream_yields_the_same_events_and_message(
        stream: tuple[StreamScript, list[dict[str, Any]]], data: st.DataObject) -> None:
    script, inputs = stream
    body = b"".join(stream_chunks(script))
    if data.draw(st.booleans(), label="crlf"):
        body = b": keep-alive\r\n\r\n" + body.replace(b"\n", b"\r\n")
    if data.draw(st.booleans(), label="one byte at a time"):
        pieces = [body[i:i + 1] for i in range(len(body))]
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=40), label="cuts"))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    whole = translate([body])
    assert translate(pieces) == whole

    events = anthropic_events(whole)
    message = assemble_message(events)
    by_type: dict[str, list[Any]] = {}
    for block in message.content:
        by_type.setdefault(block.type, []).append(block)
    assert "".join(b.thinking for b in by_type.get("thinking", [])) == "".join(script.reasoning)
    assert "".join(b.text for b in by_type.get("text", [])) == "".join(script.text)
    assert [b.input for b in by_type.get("tool_use", [])] == inputs
    expected_stop = {"length": "max_tokens", "tool_calls": "tool_use"}.get(script.finish_reason,
                                                                           "tool_use" if inputs else "end_turn")
    assert message.stop_reason == expected_stop
    cached = min(script.usage.cached_tokens, script.usage.prompt_tokens)
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        script.usage.prompt_tokens - cached, cached, script.usage.completion_tokens)
