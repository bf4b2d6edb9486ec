"""The `plugins` field: parsing with OpenRouter's names, `:online`, the web plugin's query and
system message, and citations from the answer's markdown links."""
from __future__ import annotations

import datetime as dt

import pytest

from gateway.errors import InvalidRequest
from gateway.search.base import SearchOutcome, SearchResult
from gateway.search.plugins import (Plugins, WebPlugin, cite_answer, merged_web, parse_plugins, search_query,
                                    strip_online, system_text, with_results)

SECRET = b"p" * 32
RESULTS = [SearchResult("https://www.nytimes.com/2026/12/01/a.html", "NYT story", "What happened.", "2026-12-01"),
           SearchResult("https://example.org/b", "Example B", "More.")]


def test_the_web_plugin_with_every_option():
    plugins = parse_plugins([{"id": "web", "max_results": 3, "search_prompt": "Results of {date}:",
                              "engine": "exa", "include_domains": ["nytimes.com"], "exclude_domains": []},
                             {"id": "response-healing"}])
    assert plugins.web == WebPlugin(max_results=3, search_prompt="Results of {date}:", engine="exa",
                                    include_domains=("nytimes.com",))
    assert plugins.response_healing


def test_no_plugins_and_disabled_plugins_do_nothing():
    assert parse_plugins(None) == Plugins()
    assert parse_plugins([{"id": "web", "enabled": False}, {"id": "response-healing", "enabled": False}]) == Plugins()


@pytest.mark.parametrize(("value", "named"), [
    ([{"id": "file-parser"}], "plugins[0].id: unknown plugin 'file-parser'"),
    ([{"id": "web"}, {"id": "moderation"}], "plugins[1].id: unknown plugin 'moderation'"),
    ({"id": "web"}, "plugins: must be an array"),
    (["web"], "plugins[0]"),
    ([{"id": 3}], "plugins[0].id"),
    ([{"id": "web", "max_results": 0}], "plugins[0].max_results"),
    ([{"id": "web", "max_results": "5"}], "plugins[0].max_results"),
    ([{"id": "web", "engine": "google"}], "plugins[0].engine: unknown engine 'google'"),
    ([{"id": "web", "include_domains": "nytimes.com"}], "plugins[0].include_domains"),
    ([{"id": "web", "exclude_domains": ["http://x.com"]}], "plugins[0].exclude_domains"),
    ([{"id": "web", "maxResults": 3}], "plugins[0]: unknown option(s) maxResults"),
    ([{"id": "response-healing", "strict": True}], "plugins[0]: unknown option(s) strict"),
])
def test_a_bad_plugin_is_a_400_naming_it(value, named):
    with pytest.raises(InvalidRequest) as error:
        parse_plugins(value)
    assert error.value.status == 400 and named in error.value.message


@pytest.mark.parametrize(("model", "stripped"), [
    ("openai/gpt-5.4:online", "openai/gpt-5.4"),
    ("openai/gpt-5.4:online:floor", "openai/gpt-5.4:floor"),
    ("openai/gpt-5.4:nitro:ONLINE", "openai/gpt-5.4:nitro"),
])
def test_the_online_suffix_is_the_web_plugin(model, stripped):
    assert strip_online(model) == (stripped, WebPlugin())


def test_models_without_the_suffix_are_unchanged():
    assert strip_online("openai/gpt-5.4:floor") == ("openai/gpt-5.4:floor", None)
    assert strip_online("claude-opus-4-8") == ("claude-opus-4-8", None)


def test_the_requests_own_web_plugin_wins_over_the_suffix():
    own = WebPlugin(max_results=2)
    assert merged_web(Plugins(web=own), WebPlugin()) is own
    assert merged_web(Plugins(), WebPlugin()) == WebPlugin()


def test_the_search_runs_on_the_last_user_message():
    body = {"messages": [{"role": "user", "content": "old question"}, {"role": "assistant", "content": "answer"},
                         {"role": "user", "content": [{"type": "image", "source": {}},
                                                      {"type": "text", "text": "  latest   rust release? "}]}]}
    query = search_query(body, WebPlugin(max_results=3, exclude_domains=("reddit.com",)))
    assert query.query == "latest rust release?" and query.max_results == 3
    assert query.blocked_domains == ("reddit.com",)
    assert search_query({"messages": [{"role": "assistant", "content": "x"}]}, WebPlugin()) is None


def test_a_long_message_is_cut_at_a_word_to_what_backends_take():
    query = search_query({"messages": [{"role": "user", "content": "word " * 200}]}, WebPlugin())
    assert len(query.query) <= 400 and query.query.endswith("word")


def test_the_system_message_has_the_date_the_results_and_the_citation_instruction():
    text = system_text(RESULTS, today=dt.date(2026, 12, 1))
    assert "A web search was conducted on 2026-12-01" in text
    assert "Cite them using markdown links" in text
    assert "[1] NYT story (2026-12-01)\nURL: https://www.nytimes.com/2026/12/01/a.html\nWhat happened." in text
    assert "[2] Example B" in text
    custom = system_text(RESULTS, today=dt.date(2026, 12, 1), search_prompt="Found on {date}:")
    assert custom.startswith("Found on 2026-12-01:")


@pytest.mark.parametrize(("system", "kinds"), [(None, str), ("Be brief.", list),
                                               ([{"type": "text", "text": "Be brief."}], list)])
def test_the_results_follow_the_clients_own_system_prompt(system, kinds):
    body = {"messages": [{"role": "user", "content": "q"}], **({"system": system} if system else {})}
    out = with_results(body, SearchOutcome("q", RESULTS), WebPlugin(), today=dt.date(2026, 12, 1))
    assert isinstance(out["system"], kinds)
    if kinds is list:
        assert out["system"][0] == {"type": "text", "text": "Be brief."}
        assert "NYT story" in out["system"][1]["text"]
    assert "system" not in body or body["system"] == system


def test_a_failed_search_leaves_the_request_as_it_was():
    body = {"messages": [{"role": "user", "content": "q"}]}
    assert with_results(body, SearchOutcome("q", error="unavailable"), WebPlugin(), today=dt.date.today()) == body


def test_the_answers_links_to_results_come_back_as_citations():
    answer = {"content": [{"type": "text", "text": "It happened ([nytimes.com](https://www.nytimes.com/2026/12/01/"
                                                   "a.html)) and more."}],
              "usage": {"input_tokens": 10, "output_tokens": 5}}
    cited = cite_answer(answer, SearchOutcome("q", RESULTS), SECRET)
    citation = cited["content"][0]["citations"][0]
    assert citation["type"] == "web_search_result_location" and citation["title"] == "NYT story"
    assert cited["usage"]["server_tool_use"]["web_search_requests"] == 1
    assert cited["usage"]["input_tokens"] == 10
    failed = cite_answer(answer, SearchOutcome("q", error="unavailable"), SECRET)
    assert "citations" not in failed["content"][0]
    assert failed["usage"]["server_tool_use"]["web_search_requests"] == 0
