"""The search loop driven with scripted model answers (Anthropic messages as the translators give
them) and scripted search outcomes: what each upstream round receives and what the client gets."""
from __future__ import annotations

import itertools

import anthropic.types
import pytest

from gateway.search import blocks
from gateway.search.base import SearchOutcome, SearchResult
from gateway.search.loop import SearchLoop
from tests.fakes.openai import anthropic_events, assemble_message

SECRET = b"s" * 32
A = [SearchResult("https://www.example.com/a", "Result A", "About A.", "2026-11-30")]
B = [SearchResult("https://docs.example.org/b", "Result B", "About B.")]
BODY = {"model": "openai/gpt-5.4", "max_tokens": 500,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
        "messages": [{"role": "user", "content": "What is new with A and B?"}]}


def ask(call_id: str, query: str, *, text: str | None = None, usage=(10, 5)) -> dict:
    content = ([{"type": "text", "text": text}] if text else []) + [
        {"type": "tool_use", "id": call_id, "name": "web_search", "input": {"query": query}}]
    return {"id": f"msg_{call_id}", "type": "message", "role": "assistant", "model": "openai/gpt-5.4",
            "content": content, "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def final(text: str, usage=(40, 20)) -> dict:
    return {"id": "msg_final", "type": "message", "role": "assistant", "model": "openai/gpt-5.4",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def new_loop(body=BODY, max_uses=5):
    from gateway.search.blocks import find_web_search_tool
    ids = (f"srvtoolu_gw{i}" for i in itertools.count(1))
    return SearchLoop(body, tool=find_web_search_tool(body["tools"]), max_uses=max_uses, secret=SECRET,
                      new_id=lambda: next(ids))


def run(loop: SearchLoop, answers, results):
    """Drive the loop as the executor would; returns the upstream requests and the queries searched."""
    requests, searched = [], []
    results = iter(results)
    for answer in answers:
        requests.append(loop.next_request())
        calls = loop.on_answer(answer)
        if calls is None:
            break
        outcomes = []
        for call in calls:
            if call.runs:
                searched.append(loop.search_query(call).query)
                outcomes.append(next(results))
            else:
                outcomes.append(call.refused())
        loop.on_results(outcomes)
        if loop.done:
            break
    return requests, searched


def test_two_searches_then_an_answer():
    loop = new_loop()
    requests, searched = run(loop, [ask("call_1", "A news", text="Searching."), ask("call_2", "B docs"),
                                    final("A moved [example.com](https://www.example.com/a); "
                                          "B has docs [example.org](https://docs.example.org/b).")],
                             [SearchOutcome("A news", A), SearchOutcome("B docs", B)])
    assert searched == ["A news", "B docs"]
    # Every round offers the function, never the server tool; the second sees the first's results.
    assert all([t["name"] for t in r["tools"]] == ["web_search"] and "type" not in r["tools"][0] for r in requests)
    second = requests[1]["messages"]
    assert second[1]["content"][-1]["type"] == "tool_use" and second[1]["content"][-1]["id"] == "call_1"
    assert second[2]["content"][0]["tool_use_id"] == "call_1" and "https://www.example.com/a" in \
        second[2]["content"][0]["content"]
    answer = loop.answer()
    assert [b["type"] for b in answer["content"]] == ["text", "server_tool_use", "web_search_tool_result",
                                                      "server_tool_use", "web_search_tool_result", "text"]
    assert answer["content"][1] == {"type": "server_tool_use", "id": "srvtoolu_gw1", "name": "web_search",
                                    "input": {"query": "A news"}}
    assert answer["content"][2]["tool_use_id"] == "srvtoolu_gw1"
    assert [c["url"] for c in answer["content"][5]["citations"]] == ["https://www.example.com/a",
                                                                     "https://docs.example.org/b"]
    assert answer["usage"]["input_tokens"] == 60 and answer["usage"]["output_tokens"] == 30
    assert answer["usage"]["server_tool_use"]["web_search_requests"] == 2
    assert answer["stop_reason"] == "end_turn" and answer["id"] == "msg_final"
    anthropic.types.Message.model_validate(answer)


def test_searches_past_max_uses_get_the_error_block_and_the_function_is_withdrawn():
    body = {**BODY, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]}
    loop = new_loop(body)
    two_at_once = ask("call_1", "A news")
    two_at_once["content"].append({"type": "tool_use", "id": "call_2", "name": "web_search", "input": {"query": "B"}})
    requests, searched = run(loop, [two_at_once, final("Only A.")], [SearchOutcome("A news", A)])
    assert searched == ["A news"]
    assert requests[1]["tool_choice"] == {"type": "none"}  # no searches left, nothing else to call
    refused = requests[1]["messages"][2]["content"][1]
    assert refused["is_error"] is True and "max_uses_exceeded" in refused["content"]
    answer = loop.answer()
    assert answer["content"][3]["content"] == {"type": "web_search_tool_result_error",
                                               "error_code": "max_uses_exceeded"}
    assert answer["usage"]["server_tool_use"]["web_search_requests"] == 1


def test_a_model_that_keeps_asking_is_stopped():
    body = {**BODY, "tools": [{"name": "calc", "input_schema": {"type": "object"}},
                              {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]}
    loop = new_loop(body)
    answers = [ask(f"call_{i}", f"q{i}") for i in range(10)]
    requests, searched = run(loop, answers, [SearchOutcome("q0", A)])
    assert searched == ["q0"] and loop.done and len(requests) == 4  # max_uses + 2 rounds, then the answer
    errors = [b["content"]["error_code"] for b in loop.answer()["content"]
              if b["type"] == "web_search_tool_result" and isinstance(b["content"], dict)]
    assert errors == ["max_uses_exceeded"] * 3


def test_the_settings_cap_wins_over_a_larger_request_max_uses():
    loop = new_loop(max_uses=2)
    assert loop.max_uses == 2


def test_a_failed_search_is_an_error_block_and_not_counted():
    loop = new_loop()
    run(loop, [ask("call_1", "A"), final("No luck.")], [SearchOutcome("A", error="unavailable")])
    answer = loop.answer()
    assert answer["content"][1]["content"] == {"type": "web_search_tool_result_error", "error_code": "unavailable"}
    assert answer["usage"]["server_tool_use"]["web_search_requests"] == 0


def test_a_call_without_a_query_is_invalid_input_without_a_search():
    loop = new_loop()
    bad = ask("call_1", "x")
    bad["content"][0]["input"] = {}
    _, searched = run(loop, [bad, final("ok")], [])
    assert searched == []
    assert loop.answer()["content"][1]["content"]["error_code"] == "invalid_tool_input"


def test_an_answer_that_also_calls_a_client_tool_ends_the_loop_with_tool_use():
    body = {**BODY, "tools": [{"name": "calc", "input_schema": {"type": "object"}}, *BODY["tools"]]}
    loop = new_loop(body)
    mixed = ask("call_1", "A")
    mixed["content"].append({"type": "tool_use", "id": "toolu_calc", "name": "calc", "input": {"x": 1}})
    requests, _ = run(loop, [mixed], [SearchOutcome("A", A)])
    assert loop.done and len(requests) == 1
    answer = loop.answer()
    assert [b["type"] for b in answer["content"]] == ["server_tool_use", "web_search_tool_result", "tool_use"]
    assert answer["stop_reason"] == "tool_use" and answer["id"] == "msg_call_1"


def test_an_answer_without_searches_passes_through_with_usage():
    loop = new_loop()
    run(loop, [final("Hello.")], [])
    answer = loop.answer()
    assert answer["content"] == [{"type": "text", "text": "Hello."}]
    assert answer["usage"]["server_tool_use"]["web_search_requests"] == 0


def test_the_next_turn_carries_the_previous_searches_as_tool_results():
    loop = new_loop()
    run(loop, [ask("call_1", "A"), final("A [example.com](https://www.example.com/a).")], [SearchOutcome("A", A)])
    previous = loop.answer()
    body = {**BODY, "messages": [*BODY["messages"], {"role": "assistant", "content": previous["content"]},
                                 {"role": "user", "content": "More?"}]}
    messages = new_loop(body).next_request()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert "About A." in messages[2]["content"][0]["content"]


def test_the_assembled_answer_streams_in_block_order():
    loop = new_loop()
    run(loop, [ask("call_1", "A", text="Looking."), final("See [example.com](https://www.example.com/a).")],
        [SearchOutcome("A", A)])
    answer = loop.answer()
    events = anthropic_events(blocks.message_events(answer))
    starts = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
    assert starts == [(0, "text"), (1, "server_tool_use"), (2, "web_search_tool_result"), (3, "text")]
    rebuilt = assemble_message(events)
    assert rebuilt.usage.server_tool_use.web_search_requests == 1
    assert rebuilt.content[3].citations[0].url == "https://www.example.com/a"


def test_the_loop_refuses_to_be_driven_out_of_order():
    loop = new_loop()
    with pytest.raises(RuntimeError):
        loop.on_results([])
    loop.on_answer(ask("call_1", "A"))
    with pytest.raises(ValueError):
        loop.on_results([])


def test_a_search_forced_by_tool_choice_is_forced_on_the_first_round_only():
    body = {**BODY, "tool_choice": {"type": "tool", "name": "web_search", "disable_parallel_tool_use": True}}
    requests, searched = run(new_loop(body), [ask("c1", "a"), final("Done.")],
                                [SearchOutcome("a", results=A)])
    assert searched == ["a"]
    assert requests[0]["tool_choice"] == body["tool_choice"]
    assert requests[1]["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
