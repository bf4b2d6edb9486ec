"""Web search and plugins through `gateway serve`, driven with the official Anthropic SDK: models on
the OpenAI-compatible fake (which validates every request against OpenAI's schema) and on the
Anthropic fake, searches answered by the SearXNG fake, usage and budgets read back from the
admin API and the metrics."""
from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest
import yaml

from tests.fakes.anthropic import AnthropicFake, message_body
from tests.fakes.anthropic import error_reply as anthropic_error
from tests.fakes.anthropic import json_reply as anthropic_json
from tests.fakes.openai import OpenAIFake, ToolCall, Usage, chat_json
from tests.fakes.search import json_reply
from tests.served_process import ServedProcess

KEY = "sk-search-team-0001"
FRUGAL_KEY = "sk-search-frugal-0002"
OFF_KEY = "sk-search-off-0003"
CAREFUL_KEY = "sk-search-careful-0004"
THRIFTY_KEYS = {"thrifty": "sk-search-thrifty-0005", "sparing": "sk-search-sparing-0006"}
THRIFTY_BUDGET = 0.6
# A model whose output dominates a round's cost: 500 tokens of output are 0.5 USD.
PRICEY = {"input": 1.0, "output": 1000.0}
ADMIN = "sk-search-admin-0000"
PRICE = 0.01
FRUGAL_PRICE = 0.6
# USD per million tokens on the OpenAI fake's model: small against the searches' price.
PRICING = {"input": 1.0, "output": 2.0}
CLAUDE_PRICING = {"input": 3.0, "output": 15.0, "web_search": 0.01}  # Anthropic's own searches, USD each
SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search"}
DEADLINE = 4.0
ASKED = "Tell me what the gateway project released this week, please."


@pytest.fixture(scope="module")
def chat_fake():
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture(scope="module")
def claude_fake():
    with AnthropicFake() as fake:
        yield fake


@pytest.fixture(scope="module")
def served(tmp_path_factory, chat_fake, claude_fake, fakes):
    config = {
        "admin_key": ADMIN,
        "providers": {"local": {"protocol": "openai", "base_url": chat_fake.url + "/v1"},
                      "claude": {"protocol": "anthropic", "base_url": claude_fake.url, "api_key": "sk-ant-fake",
                                 "options": {"web_search": "native"}},
                      # An Anthropic-compatible API that does not run Anthropic's tools.
                      "compat": {"protocol": "anthropic", "base_url": claude_fake.url, "api_key": "sk-compat"}},
        "models": [{"id": "local/gpt-fake", "endpoints": [{"provider": "local", "upstream_model": "gpt-fake",
                                                           "pricing": PRICING}]},
                   {"id": "claude/sonnet", "endpoints": [{"provider": "claude", "upstream_model": "claude-sonnet",
                                                          "pricing": CLAUDE_PRICING}]},
                   {"id": "compat/model", "endpoints": [{"provider": "compat", "upstream_model": "compat-1",
                                                         "pricing": PRICING}]},
                   {"id": "local/pricey", "endpoints": [{"provider": "local", "upstream_model": "gpt-pricey",
                                                          "pricing": PRICEY}]},
                   {"id": "mixed/model", "endpoints": [{"provider": "claude", "upstream_model": "claude-sonnet",
                                                        "pricing": PRICING},
                                                       {"provider": "local", "upstream_model": "gpt-fake",
                                                        "pricing": PRICING}]}],
        "keys": [{"key": KEY, "team": "research"}, {"key": FRUGAL_KEY, "team": "frugal"},
                 {"key": OFF_KEY, "team": "offline"}, {"key": CAREFUL_KEY, "team": "careful"},
                 *({"key": key, "team": team} for team, key in THRIFTY_KEYS.items())],
        "teams": [{"name": "frugal", "budget_daily_usd": 1.0, "search": {"price_per_search": FRUGAL_PRICE}},
                  {"name": "offline", "search": {"enabled": False}},
                  {"name": "careful", "search": {"blocked_domains": ["sample.net"], "max_uses": 1}},
                  *({"name": team, "budget_daily_usd": THRIFTY_BUDGET} for team in THRIFTY_KEYS)],
        "search": {"searxng_url": fakes["searxng"].url, "price_per_search": PRICE,
                   "token_secret": "a-secret-of-thirty-two-characters"},
        "retries": {"per_endpoint": 1},
        "timeouts": {"total": DEADLINE},
    }
    path = tmp_path_factory.mktemp("search") / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with ServedProcess(["--config", str(path)]) as process:
        yield process


@pytest.fixture
def model(chat_fake, claude_fake, fake_servers):
    chat_fake.reset()
    claude_fake.reset()
    return chat_fake


def sdk(served, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key=key, max_retries=0)


def asks(*queries: str, usage: Usage | None = None):
    return chat_json(None, tool_calls=[ToolCall(f"call_{i}", "web_search", json.dumps({"query": q}))
                                       for i, q in enumerate(queries, 1)],
                     finish_reason="tool_calls", usage=usage or Usage(prompt_tokens=20, completion_tokens=8))


def answers(text: str):
    return chat_json(text, usage=Usage(prompt_tokens=90, completion_tokens=15))


# -- the server tool on a model that cannot search --------------------------------------------------
def test_the_search_tool_on_an_openai_model_searches_the_models_query_and_answers_in_anthropic_blocks(
        served, model, fake_servers):
    model.enqueue(asks("gateway release december 2026"),
                  answers("It shipped web search, see [example.com](https://www.example.com/news/1)."))
    message = sdk(served).messages.create(model="local/gpt-fake", max_tokens=300, tools=[SEARCH_TOOL],
                                          messages=[{"role": "user", "content": ASKED}])
    assert fake_servers["searxng"].queries == ["gateway release december 2026"]  # the model's, not the user's
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    use, result, text = message.content
    assert use.id.startswith("srvtoolu_") and use.name == "web_search"
    assert use.input == {"query": "gateway release december 2026"}
    assert result.tool_use_id == use.id
    assert [r.url for r in result.content] == [r.url for r in fake_servers["searxng"].results]
    assert all(r.encrypted_content.startswith("gws1.") for r in result.content)
    assert result.content[0].page_age == "2026-11-30"
    assert text.citations[0].type == "web_search_result_location"
    assert text.citations[0].url == "https://www.example.com/news/1"
    assert message.usage.server_tool_use.web_search_requests == 1
    assert (message.usage.input_tokens, message.usage.output_tokens) == (110, 23)
    tokens = (110 * PRICING["input"] + 23 * PRICING["output"]) / 1e6
    assert message.model_extra["provider"] == "local"
    assert message.usage.model_extra["cost"] == pytest.approx(tokens + PRICE)
    first, second = model.chat_requests
    assert [t["function"]["name"] for t in first["tools"]] == ["web_search"]
    tool_message = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool_message["tool_call_id"] == "call_1" and "https://docs.example.org/guide" in tool_message["content"]


def test_a_streamed_search_emits_the_blocks_as_content_block_events(served, model, fake_servers):
    model.enqueue(asks("streamed query"), answers("Found [example.com](https://www.example.com/news/1)."))
    with sdk(served).messages.stream(model="local/gpt-fake", max_tokens=300, tools=[SEARCH_TOOL],
                                     messages=[{"role": "user", "content": "stream it"}]) as stream:
        events = [(e.type, e.content_block.type if e.type == "content_block_start" else None,
                   e.delta.type if e.type == "content_block_delta" else None) for e in stream]
        final = stream.get_final_message()
    raw_events = [e for e in events if e[0] in ("message_start", "content_block_start", "content_block_delta",
                                                "content_block_stop", "message_delta", "message_stop")]
    assert raw_events == [
        ("message_start", None, None),
        ("content_block_start", "server_tool_use", None), ("content_block_delta", None, "input_json_delta"),
        ("content_block_stop", None, None),
        ("content_block_start", "web_search_tool_result", None), ("content_block_stop", None, None),
        ("content_block_start", "text", None), ("content_block_delta", None, "citations_delta"),
        ("content_block_delta", None, "text_delta"), ("content_block_stop", None, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    assert final.content[0].input == {"query": "streamed query"}
    assert [r.url for r in final.content[1].content][0] == "https://www.example.com/news/1"
    assert final.content[2].citations[0].url == "https://www.example.com/news/1"
    assert final.usage.server_tool_use.web_search_requests == 1
    assert fake_servers["searxng"].queries == ["streamed query"]
    assert all(not r.get("stream") for r in model.chat_requests)


def test_two_searches_then_an_answer_and_max_uses_refuses_the_third(served, model, fake_servers):
    model.enqueue(asks("first query"), asks("second query"), asks("third query"),
                  answers("Done, per [example.com](https://www.example.com/news/1)."))
    message = sdk(served).messages.create(model="local/gpt-fake", max_tokens=300,
                                          tools=[{**SEARCH_TOOL, "max_uses": 2}],
                                          messages=[{"role": "user", "content": "search a lot"}])
    assert fake_servers["searxng"].queries == ["first query", "second query"]
    kinds = [b.type for b in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result"] * 3 + ["text"]
    assert message.content[5].content.type == "web_search_tool_result_error"
    assert message.content[5].content.error_code == "max_uses_exceeded"
    assert message.usage.server_tool_use.web_search_requests == 2
    # Once the searches are used up the model is told to answer without tools.
    assert model.chat_requests[3]["tool_choice"] == "none"


def test_a_failing_backend_gives_the_error_block_not_a_failed_request(served, model, fake_servers):
    fake_servers["searxng"].enqueue(json_reply({"error": "down"}, 502))
    model.enqueue(asks("doomed query"), answers("The search failed."))
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "tools": [SEARCH_TOOL],
        "messages": [{"role": "user", "content": "try"}]})
    assert response.status_code == 200, response.text
    content = response.json()["content"]
    assert content[1]["content"] == {"type": "web_search_tool_result_error", "error_code": "unavailable"}
    assert response.json()["usage"]["server_tool_use"]["web_search_requests"] == 0
    tool_message = next(m for m in model.chat_requests[1]["messages"] if m["role"] == "tool")
    assert "unavailable" in tool_message["content"]


def test_the_tools_domain_filters_apply_to_the_results(served, model, fake_servers):
    model.enqueue(asks("filtered query"), answers("ok"))
    message = sdk(served).messages.create(model="local/gpt-fake", max_tokens=100,
                                          tools=[{**SEARCH_TOOL, "allowed_domains": ["example.com"]}],
                                          messages=[{"role": "user", "content": "only example.com"}])
    assert [r.url for r in message.content[1].content] == ["https://www.example.com/news/1"]


def test_a_teams_blocked_domains_and_max_uses_apply_whatever_the_request_asks(served, model, fake_servers):
    model.enqueue(asks("careful one"), asks("careful two"), answers("ok"))
    message = sdk(served, CAREFUL_KEY).messages.create(
        model="local/gpt-fake", max_tokens=100, tools=[{**SEARCH_TOOL, "max_uses": 5}],
        messages=[{"role": "user", "content": "careful"}])
    assert fake_servers["searxng"].queries == ["careful one"]
    assert [r.url for r in message.content[1].content] == ["https://www.example.com/news/1",
                                                           "https://docs.example.org/guide"]
    assert message.content[3].content.error_code == "max_uses_exceeded"


def test_both_domain_lists_are_a_400(served, model):
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100,
        "tools": [{**SEARCH_TOOL, "allowed_domains": ["a.com"], "blocked_domains": ["b.com"]}],
        "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "allowed_domains and blocked_domains" in response.json()["error"]["message"]
    assert model.requests == []


def test_the_same_search_again_comes_from_the_cache(served, model, fake_servers):
    for _ in range(2):
        model.enqueue(asks("cached query"), answers("ok"))
        message = sdk(served).messages.create(model="local/gpt-fake", max_tokens=100, tools=[SEARCH_TOOL],
                                              messages=[{"role": "user", "content": "cache me"}])
        assert [r.url for r in message.content[1].content][0] == "https://www.example.com/news/1"
    assert fake_servers["searxng"].queries == ["cached query"]
    metrics = httpx.get(served.url + "/metrics").text
    assert 'gateway_search_requests_total{backend="searxng",outcome="cached",team="research"}' in metrics


def test_the_search_tool_reaches_an_anthropic_upstream_untouched(served, model, claude_fake, fake_servers):
    tool = {**SEARCH_TOOL, "max_uses": 3, "user_location": {"type": "approximate", "city": "Paris",
                                                            "country": "FR"}}
    native = message_body(content=[
        {"type": "server_tool_use", "id": "srvtoolu_01abc", "name": "web_search", "input": {"query": "q"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01abc",
         "content": [{"type": "web_search_result", "url": "https://anthropic.example/x", "title": "X",
                      "page_age": None, "encrypted_content": "EqAnthropicOwn"}]},
        {"type": "text", "text": "Anthropic searched."}])
    native["usage"]["server_tool_use"] = {"web_search_requests": 1}
    claude_fake.enqueue(anthropic_json(native))
    message = sdk(served).messages.create(model="claude/sonnet", max_tokens=100, tools=[tool],
                                          messages=[{"role": "user", "content": ASKED}])
    sent = claude_fake.requests[0].json()
    assert sent["tools"] == [tool]
    assert fake_servers["searxng"].queries == []
    assert message.content[1].content[0].encrypted_content == "EqAnthropicOwn"
    assert message.usage.server_tool_use.web_search_requests == 1
    # Anthropic's own search is priced as the catalog says, in the answer's cost and so the budgets.
    tokens = (10 * CLAUDE_PRICING["input"] + 5 * CLAUDE_PRICING["output"]) / 1e6
    assert message.usage.model_extra["cost"] == pytest.approx(tokens + CLAUDE_PRICING["web_search"])


def test_anthropics_own_searches_in_a_stream_are_priced_too(served, model, claude_fake):
    from tests.fakes.anthropic import event, sse_reply
    start = message_body(content=[])
    start["usage"]["output_tokens"] = 1
    claude_fake.enqueue(sse_reply([
        event("message_start", {"type": "message_start", "message": start}),
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": "Searched twice."}}),
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": 5, "server_tool_use": {"web_search_requests": 2}}}),
        event("message_stop", {"type": "message_stop"})]))
    with sdk(served).messages.stream(model="claude/sonnet", max_tokens=100, tools=[SEARCH_TOOL],
                                     messages=[{"role": "user", "content": "stream natively"}]) as stream:
        final = stream.get_final_message()
    assert final.usage.server_tool_use.web_search_requests == 2
    assert claude_fake.requests[0].json()["tools"] == [SEARCH_TOOL]
    deadline = time.monotonic() + 10
    while True:  # the usage record holds the two searches and their price
        records = httpx.get(served.url + "/admin/requests", headers={"x-api-key": ADMIN},
                            params={"team": "research"}).json()["data"]
        found = [r for r in records if r.get("web_search_requests") == 2]
        if found:
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.1)
    tokens = (10 * CLAUDE_PRICING["input"] + 5 * CLAUDE_PRICING["output"]) / 1e6
    assert found[0]["cost_usd"] == pytest.approx(tokens + 2 * CLAUDE_PRICING["web_search"])


def test_an_anthropic_compatible_upstream_without_native_search_gets_the_loop(served, model, claude_fake,
                                                                                fake_servers):
    claude_fake.enqueue(anthropic_json(message_body(content=[
        {"type": "tool_use", "id": "toolu_compat1", "name": "web_search", "input": {"query": "compat query"}}],
        stop_reason="tool_use")))
    claude_fake.enqueue(anthropic_json(message_body("Compat found [example.com](https://www.example.com/news/1).")))
    message = sdk(served).messages.create(model="compat/model", max_tokens=100, tools=[SEARCH_TOOL],
                                          messages=[{"role": "user", "content": "compat"}])
    assert fake_servers["searxng"].queries == ["compat query"]
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    assert message.content[2].citations[0].url == "https://www.example.com/news/1"
    first, second = (r.json() for r in claude_fake.requests)
    assert first["tools"][0]["name"] == "web_search" and "input_schema" in first["tools"][0]
    assert "type" not in first["tools"][0]
    results = second["messages"][-1]["content"]
    assert results[0]["type"] == "tool_result" and results[0]["tool_use_id"] == "toolu_compat1"
    assert "https://docs.example.org/guide" in results[0]["content"]


def test_a_plan_mixing_anthropic_and_other_upstreams_runs_the_loop_on_every_endpoint(
        served, model, claude_fake, fake_servers):
    claude_fake.enqueue(anthropic_error(529, "overloaded_error", "Overloaded"))
    model.enqueue(asks("mixed query"))
    claude_fake.enqueue(anthropic_json(message_body(
        "Answered by Claude from [example.com](https://www.example.com/news/1).")))
    model.enqueue(answers("Answered by the chat model from [example.com](https://www.example.com/news/1)."))
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "mixed/model", "max_tokens": 100, "tools": [SEARCH_TOOL],
        "provider": {"order": ["claude", "local"]}, "messages": [{"role": "user", "content": "mixed"}]})
    assert response.status_code == 200, response.text
    # The first round fell back from the overloaded Anthropic endpoint to the chat one, which searched.
    assert response.headers["x-gateway-attempts"].startswith("claude/mixed/model=529,local/mixed/model=ok,")
    assert fake_servers["searxng"].queries == ["mixed query"]
    message = response.json()
    assert [b["type"] for b in message["content"]] == ["server_tool_use", "web_search_tool_result", "text"]
    assert message["content"][2]["text"].startswith("Answered by")
    assert message["content"][2]["citations"][0]["url"] == "https://www.example.com/news/1"
    # An Anthropic endpoint in such a plan is offered the gateway's function, not the server tool.
    for request in claude_fake.requests:
        assert [t.get("type") for t in request.json()["tools"]] == [None]
        assert request.json()["tools"][0]["name"] == "web_search"


def test_the_gateways_search_blocks_reach_anthropic_as_text_on_the_next_turn(served, model, claude_fake):
    model.enqueue(asks("history query"), answers("See [example.com](https://www.example.com/news/1)."))
    first = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "tools": [SEARCH_TOOL],
        "messages": [{"role": "user", "content": "look it up"}]}).json()
    claude_fake.enqueue(anthropic_json(message_body("Thanks.")))
    second = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "claude/sonnet", "max_tokens": 100, "user": "end-user-1", "metadata": {"user_id": "u-1"},
        "messages": [{"role": "user", "content": "look it up"},
                     {"role": "assistant", "content": first["content"]},
                     {"role": "user", "content": "and then?"}]})
    assert second.status_code == 200, second.text
    sent = claude_fake.requests[0].body
    assert b"srvtoolu_gw" not in sent and b"gws1." not in sent
    assert set(claude_fake.requests[0].json()) == {"model", "max_tokens", "metadata", "messages"}
    assert claude_fake.requests[0].json()["model"] == "claude-sonnet"
    assistant = claude_fake.requests[0].json()["messages"][1]["content"]
    assert assistant[0]["type"] == "text" and "https://www.example.com/news/1" in assistant[0]["text"]


def test_search_off_for_a_team_leaves_the_tool_to_the_translator(served, model, fake_servers):
    model.enqueue(answers("No search here."))
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": OFF_KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "tools": [SEARCH_TOOL],
        "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert response.headers["x-gateway-dropped-params"] == "server_tools"
    assert fake_servers["searxng"].queries == []


# -- plugins ------------------------------------------------------------------------------------------
def test_the_web_plugin_adds_results_and_cites_them(served, model, fake_servers):
    model.enqueue(answers("It is out, per [example.com](https://www.example.com/news/1)."))
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "system": "Be brief.", "plugins": [{"id": "web"}],
        "messages": [{"role": "user", "content": "latest gateway release"}]})
    assert response.status_code == 200, response.text
    assert fake_servers["searxng"].queries == ["latest gateway release"]
    system = model.chat_requests[0]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    assert "A web search was conducted on" in system["content"]
    assert "https://docs.example.org/guide" in system["content"]
    message = anthropic.types.Message.model_validate(response.json())
    assert message.content[0].citations[0].url == "https://www.example.com/news/1"
    assert message.usage.server_tool_use.web_search_requests == 1
    assert "plugins" not in model.chat_requests[0]


def test_the_online_suffix_is_the_web_plugin(served, model, fake_servers):
    model.enqueue(answers("Online [example.com](https://www.example.com/news/1)."))
    message = sdk(served).messages.create(model="local/gpt-fake:online", max_tokens=100,
                                          messages=[{"role": "user", "content": "online suffix query"}])
    assert fake_servers["searxng"].queries == ["online suffix query"]
    assert message.model == "local/gpt-fake"
    assert message.content[0].citations[0].url == "https://www.example.com/news/1"


def test_an_unknown_plugin_is_a_400_naming_it(served, model):
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "plugins": [{"id": "file-parser"}],
        "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "'file-parser'" in response.json()["error"]["message"]
    assert model.requests == []


def test_the_web_plugin_for_a_team_without_search_is_a_400(served, model):
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": OFF_KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "plugins": [{"id": "web"}],
        "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert "web search is not configured for team 'offline'" in response.json()["error"]["message"]


def test_response_healing_repairs_a_json_answer(served, model):
    model.enqueue(answers("Here you go:\n```json\n{\"name\": 'Ada', \"ok\": True,}\n```"))
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "plugins": [{"id": "response-healing"}],
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "messages": [{"role": "user", "content": "json please"}]})
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["content"][0]["text"]) == {"name": "Ada", "ok": True}
    assert "server_tool_use" not in response.json()["usage"]


def test_without_the_plugin_the_json_answer_is_left_as_it_came(served, model):
    model.enqueue(answers("```json\n{\"a\": 1,}\n```"))
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100,
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "messages": [{"role": "user", "content": "json please"}]})
    assert response.json()["content"][0]["text"] == "```json\n{\"a\": 1,}\n```"


# -- cost -----------------------------------------------------------------------------------------------
def budget(served, team: str) -> dict:
    return httpx.get(f"{served.url}/admin/teams/{team}/budget", headers={"x-api-key": ADMIN}).json()["daily"]


def test_the_search_cost_is_in_the_teams_usage_and_counts_against_its_budget(served, model, fake_servers):
    model.enqueue(answers("Priced [example.com](https://www.example.com/news/1)."))
    first = httpx.post(served.url + "/v1/messages", headers={"x-api-key": FRUGAL_KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "plugins": [{"id": "web"}],
        "messages": [{"role": "user", "content": "frugal search"}]})
    assert first.status_code == 200, first.text
    cost = first.json()["usage"]["cost"]
    assert cost == pytest.approx(FRUGAL_PRICE + (90 * PRICING["input"] + 15 * PRICING["output"]) / 1e6)
    deadline = time.monotonic() + 10
    while budget(served, "frugal")["spent_usd"] != pytest.approx(cost):
        assert time.monotonic() < deadline, budget(served, "frugal")
        time.sleep(0.05)
    # What is left (0.4) covers a request without search, not one that may search (0.6 reserved).
    model.enqueue(answers("plain"))
    plain = httpx.post(served.url + "/v1/messages", headers={"x-api-key": FRUGAL_KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "messages": [{"role": "user", "content": "no search"}]})
    assert plain.status_code == 200
    refused = httpx.post(served.url + "/v1/messages", headers={"x-api-key": FRUGAL_KEY}, json={
        "model": "local/gpt-fake", "max_tokens": 100, "plugins": [{"id": "web"}],
        "messages": [{"role": "user", "content": "frugal search again"}]})
    assert refused.status_code == 429, refused.text
    assert "budget" in refused.json()["error"]["message"]
    assert fake_servers["searxng"].queries == ["frugal search"]
    deadline = time.monotonic() + 10
    while True:  # the usage record of the search request holds the search's cost
        records = httpx.get(served.url + "/admin/requests", headers={"x-api-key": ADMIN},
                            params={"team": "frugal"}).json()["data"]
        searched = [r for r in records if r["cost_usd"] == pytest.approx(cost)]
        if searched:
            assert searched[0]["web_search_requests"] == 1
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.1)


def _thrifty_search(served, team: str, stream: bool) -> httpx.Response:
    # Admission reserves the first round's worst case (all 500 tokens of output, 0.5 USD) with the
    # searches and their results: about 0.57 USD of the team's 0.6. The first round spends its
    # output in full and asks to search; the next round's worst case no longer fits.
    body = {"model": "local/pricey", "max_tokens": 500, "stream": stream, "tools": [{**SEARCH_TOOL, "max_uses": 2}],
            "messages": [{"role": "user", "content": "search, at length"}]}
    with httpx.stream("POST", served.url + "/v1/messages", headers={"x-api-key": THRIFTY_KEYS[team]}, json=body,
                      timeout=10) as response:
        response.read()
    return response


def _spend_settles(served, team: str, spent: float) -> None:
    deadline = time.monotonic() + 10
    while budget(served, team)["spent_usd"] != pytest.approx(spent):
        assert time.monotonic() < deadline, budget(served, team)
        time.sleep(0.05)


@pytest.mark.parametrize("team, stream", [("thrifty", False), ("sparing", True)], ids=["json", "stream"])
def test_the_rounds_of_a_search_never_spend_past_what_was_reserved(served, model, fake_servers, team, stream):
    round_cost = (20 * PRICEY["input"] + 500 * PRICEY["output"]) / 1e6
    model.enqueue(asks(f"costly query for {team}", usage=Usage(prompt_tokens=20, completion_tokens=500)),
                  asks("second query", usage=Usage(prompt_tokens=20, completion_tokens=500)),
                  answers("never sent"))
    response = _thrifty_search(served, team, stream)
    assert len(model.chat_requests) == 1  # the second round was never sent
    assert fake_servers["searxng"].queries == [f"costly query for {team}"]
    if stream:  # the stream had begun with the first round's search blocks: it ends with the refusal
        assert response.status_code == 200
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
        assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "rate_limit_error"
        message = events[-1]["error"]["message"]
    else:
        assert response.status_code == 429, response.text
        assert response.headers["x-should-retry"] == "false"
        message = response.json()["error"]["message"]
    assert "budget" in message and "next round" in message and repr(team) in message
    # What the round and the search used is counted, and the budget holds.
    spent = round_cost + PRICE
    _spend_settles(served, team, spent)
    assert spent <= THRIFTY_BUDGET


def test_count_tokens_counts_for_an_online_model(served, model):
    counted = sdk(served).messages.count_tokens(model="local/gpt-fake:online",
                                                messages=[{"role": "user", "content": "how many?"}])
    assert counted.input_tokens > 0


def test_a_streamed_web_plugin_answer_carries_the_citations(served, model, fake_servers):
    model.enqueue(answers("Streamed [example.com](https://www.example.com/news/1)."))
    with sdk(served).messages.stream(model="local/gpt-fake", max_tokens=100, extra_body={"plugins": [{"id": "web"}]},
                                     messages=[{"role": "user", "content": "streamed plugin"}]) as stream:
        final = stream.get_final_message()
    assert fake_servers["searxng"].queries == ["streamed plugin"]
    assert final.content[0].text == "Streamed [example.com](https://www.example.com/news/1)."
    assert final.content[0].citations[0].url == "https://www.example.com/news/1"
    assert final.usage.server_tool_use.web_search_requests == 1


def test_the_requests_deadline_bounds_all_its_rounds(served, model, fake_servers):
    slow = [asks(f"slow {i}") for i in range(3)]
    for reply in slow:
        reply.delay_first = DEADLINE / 2 + 0.2  # each round within the deadline, all of them not
    model.enqueue(*slow)
    started = time.monotonic()
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": KEY}, timeout=30, json={
        "model": "local/gpt-fake", "max_tokens": 100, "tools": [SEARCH_TOOL],
        "messages": [{"role": "user", "content": "slowly"}]})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert time.monotonic() - started < DEADLINE + 1.5
    assert fake_servers["searxng"].queries == ["slow 0"]


def read_stream(served, body: dict) -> list[tuple[float, str, dict]]:
    """The SSE events of a streamed request, each with the time it arrived."""
    events, started = [], time.monotonic()
    with httpx.stream("POST", served.url + "/v1/messages", headers={"x-api-key": KEY}, timeout=30,
                      json={**body, "stream": True}) as response:
        assert response.status_code == 200
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((time.monotonic() - started, name, json.loads(line[6:])))
    return events


def test_a_stream_sends_each_rounds_search_blocks_before_the_next_round_answers(served, model, fake_servers):
    final = answers("Later [example.com](https://www.example.com/news/1).")
    final.delay_first = 1.0
    model.enqueue(asks("early query"), final)
    events = read_stream(served, {"model": "local/gpt-fake", "max_tokens": 100, "tools": [SEARCH_TOOL],
                                  "messages": [{"role": "user", "content": "early"}]})
    starts = {e[2]["content_block"]["type"]: e[0] for e in events if e[1] == "content_block_start"}
    assert starts["text"] - starts["web_search_tool_result"] >= 0.8
    assert events[0][1] == "message_start" and events[-1][1] == "message_stop"
    delta = next(e[2] for e in events if e[1] == "message_delta")
    assert delta["usage"]["server_tool_use"]["web_search_requests"] == 1
    assert delta["usage"]["input_tokens"] == 110


def test_a_round_failing_after_the_stream_began_ends_it_with_an_error_event(served, model, fake_servers):
    from tests.fakes.openai import error_reply
    model.enqueue(asks("then fails"), error_reply(400, "Invalid request: the second round is refused."))
    events = read_stream(served, {"model": "local/gpt-fake", "max_tokens": 100, "tools": [SEARCH_TOOL],
                                  "messages": [{"role": "user", "content": "fail later"}]})
    names = [e[1] for e in events]
    assert names[:1] == ["message_start"] and "content_block_start" in names
    assert names[-1] == "error" and "message_stop" not in names
    assert events[-1][2]["error"]["type"] == "invalid_request_error"


def test_a_reload_applies_a_teams_new_search_settings(tmp_path, chat_fake, fakes, model):
    config = {"admin_key": ADMIN, "providers": {"local": {"protocol": "openai", "base_url": chat_fake.url + "/v1"}},
              "models": [{"id": "local/gpt-fake", "endpoints": [{"provider": "local", "upstream_model": "gpt-fake",
                                                                 "pricing": PRICING}]}],
              "keys": [{"key": KEY, "team": "research"}], "teams": [{"name": "research"}],
              "search": {"searxng_url": fakes["searxng"].url}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    request = {"model": "local/gpt-fake", "max_tokens": 50, "plugins": [{"id": "web"}],
               "messages": [{"role": "user", "content": "reloaded search"}]}
    with ServedProcess(["--config", str(path)]) as process:
        assert httpx.post(process.url + "/v1/messages", headers={"x-api-key": KEY}, json=request).status_code == 200
        config["teams"] = [{"name": "research", "search": {"enabled": False}}]
        path.write_text(yaml.safe_dump(config))
        assert httpx.post(process.url + "/admin/reload", headers={"x-api-key": ADMIN}).status_code == 200
        refused = httpx.post(process.url + "/v1/messages", headers={"x-api-key": KEY}, json=request)
        config["teams"] = [{"name": "research", "search": {"backend": "brave"}}]  # no key: cannot work
        path.write_text(yaml.safe_dump(config))
        bad = httpx.post(process.url + "/admin/reload", headers={"x-api-key": ADMIN})
    assert refused.status_code == 400 and "not configured for team 'research'" in refused.text
    assert bad.status_code == 400 and "teams[research].search" in bad.text and "api_key" in bad.text
    assert fakes["searxng"].queries == ["reloaded search"]
