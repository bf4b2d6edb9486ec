"""Anthropic's web search shapes: the server tool in a request, the function other models get,
the blocks and their stream events (read back with the official SDK), tokens and history."""
from __future__ import annotations

import anthropic.types
import pytest

from gateway.errors import InvalidRequest
from gateway.search import blocks, history
from gateway.search.base import SearchOutcome, SearchResult
from gateway.search.tokens import make_token, read_token
from tests.fakes.openai import anthropic_events, assemble_message

SECRET = b"k" * 32
RESULTS = [SearchResult("https://www.example.com/news/1", "Example news", "Snippet one.", "2026-11-30"),
           SearchResult("https://docs.example.org/guide", "Guide", "Snippet two.")]


@pytest.mark.parametrize("version", ["web_search_20250305", "web_search_20260209", "web_search_20260318"])
def test_every_dated_web_search_tool_is_recognised(version):
    tool = blocks.find_web_search_tool([{"name": "calc", "input_schema": {}},
                                        {"type": version, "name": "web_search", "max_uses": 3,
                                         "allowed_domains": ["example.com"],
                                         "user_location": {"type": "approximate", "country": "DE", "city": "Berlin"}}])
    assert tool.type == version and tool.max_uses == 3 and tool.allowed_domains == ("example.com",)
    assert tool.user_location.country == "DE" and tool.index == 1


def test_a_request_without_the_server_tool_has_none():
    assert blocks.find_web_search_tool([{"name": "web_search_helper", "input_schema": {}}]) is None
    assert blocks.find_web_search_tool(None) is None


@pytest.mark.parametrize(("tool", "named"), [
    ({"allowed_domains": ["a.com"], "blocked_domains": ["b.com"]}, "tools[0]: allowed_domains and blocked_domains"),
    ({"max_uses": 0}, "tools[0].max_uses"),
    ({"max_uses": True}, "tools[0].max_uses"),
    ({"blocked_domains": ["https://b.com"]}, "tools[0].blocked_domains"),
    ({"user_location": {"type": "exact"}}, "tools[0].user_location"),
    ({"name": "search"}, "tools[0].name"),
])
def test_a_server_tool_anthropic_would_refuse_is_a_400_naming_the_member(tool, named):
    with pytest.raises(InvalidRequest) as error:
        blocks.find_web_search_tool([{"type": "web_search_20250305", "name": "web_search", **tool}])
    assert error.value.status == 400 and named in error.value.message


def test_other_models_get_a_web_search_function_in_the_server_tools_place():
    body = {"model": "m", "tools": [{"name": "calc", "input_schema": {"type": "object"}},
                                    {"type": "web_search_20250305", "name": "web_search"}], "messages": []}
    tool = blocks.find_web_search_tool(body["tools"])
    out = blocks.with_function_tool(body, tool)
    assert [t["name"] for t in out["tools"]] == ["calc", "web_search"]
    function = out["tools"][1]
    assert "type" not in function and function["input_schema"]["required"] == ["query"]
    assert list(function["input_schema"]["properties"]) == ["query"]
    assert "current information" in function["description"]
    assert body["tools"][1]["type"] == "web_search_20250305"  # the client's request is not changed


def test_a_client_tool_named_web_search_conflicts_with_the_function():
    with pytest.raises(InvalidRequest):
        blocks.with_function_tool({"tools": [{"name": "web_search", "input_schema": {}}]})


def test_used_up_searches_tell_the_model_to_answer_when_it_has_no_other_tool():
    only = {"tools": [blocks.WEB_SEARCH_FUNCTION], "tool_choice": {"type": "tool", "name": "web_search"}}
    assert blocks.searches_used_up(only) == {"tools": [blocks.WEB_SEARCH_FUNCTION], "tool_choice": {"type": "none"}}
    mixed = {"tools": [{"name": "calc"}, blocks.WEB_SEARCH_FUNCTION], "tool_choice": {"type": "any"}}
    assert blocks.searches_used_up(mixed) == mixed
    forced = {**mixed, "tool_choice": {"type": "tool", "name": "web_search"}}
    assert blocks.searches_used_up(forced)["tool_choice"] == {"type": "auto"}


def test_server_tool_ids_are_anthropic_shaped_and_unique():
    ids = {blocks.new_server_tool_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("srvtoolu_") for i in ids)


# -- tokens -------------------------------------------------------------------------------------
def test_tokens_read_back_with_the_secret_only():
    token = make_token(SECRET, {"u": "https://a.example.com/", "s": "snippet"})
    assert token.startswith("gws1.")
    assert read_token(SECRET, token) == {"u": "https://a.example.com/", "s": "snippet"}
    assert read_token(b"other" * 8, token) is None
    head, _, mac = token.rpartition(".")
    assert read_token(SECRET, head[:-2] + "AA." + mac) is None
    assert read_token(SECRET, "EqQBCioIAhgBIiQ3YTQ2") is None  # one of Anthropic's own


# -- blocks and citations -----------------------------------------------------------------------
def test_result_blocks_carry_the_results_and_readable_encrypted_content():
    block = blocks.web_search_tool_result("srvtoolu_gw1", SearchOutcome("q", RESULTS), SECRET)
    parsed = anthropic.types.WebSearchToolResultBlock.model_validate(block)
    assert [item.url for item in parsed.content] == [r.url for r in RESULTS]
    assert parsed.content[0].page_age == "2026-11-30"
    assert read_token(SECRET, parsed.content[0].encrypted_content)["s"] == "Snippet one."


@pytest.mark.parametrize("code", ["max_uses_exceeded", "unavailable", "too_many_requests", "query_too_long",
                                  "invalid_tool_input"])
def test_an_error_outcome_is_a_result_error_block(code):
    block = blocks.web_search_tool_result("srvtoolu_gw1", SearchOutcome("q", error=code), SECRET)
    assert block["content"] == {"type": "web_search_tool_result_error", "error_code": code}
    anthropic.types.WebSearchToolResultBlock.model_validate(block)


def test_markdown_links_to_results_become_citations():
    text = ("Markets rose today [example.com](https://www.example.com/news/1). See also the "
            "[guide](https://docs.example.org/guide/) and [elsewhere](https://other.example.net/).")
    citations = blocks.citations_from_links(text, RESULTS, SECRET)
    assert [c["url"] for c in citations] == ["https://www.example.com/news/1", "https://docs.example.org/guide"]
    assert citations[0]["cited_text"] == "Markets rose today example.com."
    assert citations[0]["title"] == "Example news"
    assert read_token(SECRET, citations[0]["encrypted_index"])["u"] == "https://www.example.com/news/1"
    for citation in citations:
        anthropic.types.CitationsWebSearchResultLocation.model_validate(citation)
        assert len(citation["cited_text"]) <= 150


def test_usage_sums_every_round_and_counts_the_searches():
    usage = blocks.sum_usage([{"input_tokens": 10, "output_tokens": 3},
                              {"input_tokens": 30, "output_tokens": 7, "cache_read_input_tokens": 4}], 2)
    assert usage == {"input_tokens": 40, "output_tokens": 10, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 4, "server_tool_use": {"web_search_requests": 2,
                                                                       "web_fetch_requests": 0}}
    assert blocks.search_cost(2, 0.01) == 0.02


def _message():
    cited = blocks.cite_text_blocks([{"type": "text", "text": "It rose [example.com](https://www.example.com/news/1)."}],
                                    RESULTS, SECRET)
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "Let me search."},
                        blocks.server_tool_use("srvtoolu_gwa", "markets today"),
                        blocks.web_search_tool_result("srvtoolu_gwa", SearchOutcome("q", RESULTS), SECRET),
                        blocks.server_tool_use("srvtoolu_gwb", "more"),
                        blocks.tool_result_error("srvtoolu_gwb", "max_uses_exceeded"),
                        *cited],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": blocks.sum_usage([{"input_tokens": 5, "output_tokens": 9}], 1)}


def test_the_stream_rebuilds_the_same_message_in_the_sdk():
    message = _message()
    events = anthropic_events(blocks.message_events(message))
    assert [e["type"] for e in events][:4] == ["message_start", "content_block_start", "content_block_delta",
                                               "content_block_stop"]
    rebuilt = assemble_message(events).model_dump(exclude_none=True)
    expected = anthropic.types.Message.model_validate(message).model_dump(exclude_none=True)
    assert rebuilt["content"] == expected["content"]
    assert rebuilt["usage"]["server_tool_use"]["web_search_requests"] == 1
    assert rebuilt["stop_reason"] == "end_turn"


def test_stream_block_order_follows_the_content():
    events = anthropic_events(blocks.message_events(_message()))
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["text", "server_tool_use", "web_search_tool_result", "server_tool_use",
                      "web_search_tool_result", "text"]
    server_start = next(e for e in events if e["type"] == "content_block_start"
                        and e["content_block"]["type"] == "server_tool_use")
    assert server_start["content_block"]["input"] == {}
    result_start = next(e for e in events if e["type"] == "content_block_start"
                        and e["content_block"]["type"] == "web_search_tool_result")
    assert len(result_start["content_block"]["content"]) == 2  # whole in its start
    last_text = [e for e in events if e["type"] == "content_block_delta" and e["index"] == 5]
    assert [e["delta"]["type"] for e in last_text] == ["citations_delta", "text_delta"]


# -- history ------------------------------------------------------------------------------------
def _history():
    return [{"role": "user", "content": "What happened?"}, {"role": "assistant", "content": _message()["content"]},
            {"role": "user", "content": "And then?"}]


def test_gateway_blocks_never_reach_anthropic_as_its_own():
    out = history.for_anthropic(_history(), SECRET)
    assistant = out[1]["content"]
    kinds = [b["type"] for b in assistant]
    assert "server_tool_use" not in kinds and "web_search_tool_result" not in kinds
    assert all("gws1." not in str(b) for b in assistant)
    assert "Example news" in assistant[1]["text"] and "Snippet one." in assistant[1]["text"]
    assert "max_uses_exceeded" in assistant[2]["text"]
    assert out[0] == _history()[0] and out[2] == _history()[2]


def test_anthropics_own_search_blocks_pass_to_anthropic_untouched():
    own = [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_01abc", "name": "web_search", "input": {"query": "q"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01abc", "content": [
            {"type": "web_search_result", "url": "https://a.com/", "title": "A", "encrypted_content": "EqQBCioI"}]},
        {"type": "text", "text": "A says", "citations": [{"type": "web_search_result_location", "url": "https://a.com/",
                                                          "title": "A", "encrypted_index": "Eo8BCi", "cited_text": "x"}]}]}]
    assert history.for_anthropic(own, SECRET) == own


def test_other_upstreams_get_searches_back_as_tool_use_and_tool_result():
    out = history.for_other_upstream(_history(), SECRET)
    assert [m["role"] for m in out] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert out[1]["content"][-1] == {"type": "tool_use", "id": "srvtoolu_gwa", "name": "web_search",
                                     "input": {"query": "markets today"}}
    result = out[2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "srvtoolu_gwa"
    assert "https://docs.example.org/guide" in result["content"] and "Snippet two." in result["content"]
    assert "max_uses_exceeded" in out[4]["content"][0]["content"]
    assert "citations" not in out[5]["content"][0]
    assert out[6]["content"] == [{"type": "text", "text": "And then?"}]
