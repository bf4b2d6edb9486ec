"""The search loop over real wire formats: an OpenAI-compatible fake (which validates every request
against OpenAI's schema) asks for searches, the SearXNG fake answers them, and each round goes
through the project's own translators and upstream client, as the executor will drive it."""
from __future__ import annotations

import datetime as dt

import anthropic.types
import orjson
import pytest

from gateway.search.blocks import find_web_search_tool, message_events
from gateway.search.loop import SearchLoop
from gateway.search.plugins import parse_plugins, strip_online
from gateway.search.runner import run_loop, run_web_plugin
from gateway.search.service import Searcher, SearchService
from gateway.search.settings import SearchSettings
from gateway.search.tokens import read_token
from gateway.upstream import Target
from providers import openai_chat
from tests.fakes.openai import OpenAIFake, ToolCall, Usage, anthropic_events, assemble_message, chat_json

pytestmark = pytest.mark.anyio
SECRET = b"w" * 32


@pytest.fixture(scope="module")
def model_fake():
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def model(model_fake):
    model_fake.reset()
    return model_fake


def asks(query: str, call_id: str = "call_1") -> object:
    return chat_json(None, tool_calls=[ToolCall(call_id, "web_search", orjson.dumps({"query": query}).decode())],
                     finish_reason="tool_calls", usage=Usage(prompt_tokens=20, completion_tokens=8))


def model_caller(fake: OpenAIFake, client):
    """One round: the Anthropic-format body translated, sent through the upstream client, answered."""
    target = Target(openai_chat.chat_completions_url(fake.url + "/v1"))

    async def call(body: dict) -> dict:
        chat, _ = openai_chat.to_chat_request(body, upstream_model="gpt-fake", options=openai_chat.ChatOptions(),
                                              stream=False)
        response = await client.request("POST", target, openai_chat.upstream_headers(api_key="sk-x", stream=False),
                                        orjson.dumps(chat))
        raw = await response.read()
        response.release()
        assert response.status == 200, raw
        return openai_chat.from_chat_response(orjson.loads(raw), model="openai/gpt-fake", provider="fake")
    return call


async def drive(loop: SearchLoop, searcher: Searcher, fake: OpenAIFake, client) -> dict:
    return await run_loop(loop, searcher, model_caller(fake, client))


def body(max_uses: int | None = None) -> dict:
    tool = {"type": "web_search_20250305", "name": "web_search", **({"max_uses": max_uses} if max_uses else {})}
    return {"model": "openai/gpt-fake", "max_tokens": 300, "tools": [tool],
            "messages": [{"role": "user", "content": "Tell me what the gateway project released this week, please."}]}


def searcher(fake_servers, client) -> Searcher:
    return SearchService(SearchSettings(searxng_url=fake_servers["searxng"].url), client).searcher("team-a")


async def test_the_model_searches_with_its_own_query_and_the_answer_cites_the_results(model, fake_servers, client):
    request = body()
    model.enqueue(asks("gateway release december 2026"),
                  chat_json("It shipped search [example.com](https://www.example.com/news/1).",
                            usage=Usage(prompt_tokens=90, completion_tokens=15)))
    loop = SearchLoop(request, tool=find_web_search_tool(request["tools"]), max_uses=5, secret=SECRET)
    answer = await drive(loop, searcher(fake_servers, client), model, client)
    assert fake_servers["searxng"].queries == ["gateway release december 2026"]  # not the user's message
    second = model.chat_requests[1]
    tool_message = next(m for m in second["messages"] if m["role"] == "tool")
    assert "https://www.example.com/news/1" in tool_message["content"]
    assert [t["function"]["name"] for t in second["tools"]] == ["web_search"]
    parsed = anthropic.types.Message.model_validate(answer)
    kinds = [b.type for b in parsed.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    assert parsed.content[0].input == {"query": "gateway release december 2026"}
    assert parsed.content[0].id.startswith("srvtoolu_")
    urls = [r.url for r in parsed.content[1].content]
    assert urls == [r.url for r in fake_servers["searxng"].results]
    assert read_token(SECRET, parsed.content[1].content[0].encrypted_content)["u"] == urls[0]
    assert parsed.content[2].citations[0].url == "https://www.example.com/news/1"
    assert parsed.usage.server_tool_use.web_search_requests == 1
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (110, 23)
    rebuilt = assemble_message(anthropic_events(message_events(answer)))
    assert [b.type for b in rebuilt.content] == kinds


async def test_used_up_searches_still_make_valid_openai_requests(model, fake_servers, client):
    request = body(max_uses=1)
    model.enqueue(asks("first"), asks("second", "call_2"), chat_json("Done."))
    loop = SearchLoop(request, tool=find_web_search_tool(request["tools"]), max_uses=5, secret=SECRET)
    answer = await drive(loop, searcher(fake_servers, client), model, client)
    assert fake_servers["searxng"].queries == ["first"]
    assert model.chat_requests[1]["tool_choice"] == "none"
    assert answer["content"][3]["content"]["error_code"] == "max_uses_exceeded"
    assert answer["usage"]["server_tool_use"]["web_search_requests"] == 1


async def test_a_failing_search_backend_gives_the_model_an_error_and_the_client_an_error_block(
        model, fake_servers, client):
    from tests.fakes.search import json_reply
    fake_servers["searxng"].enqueue(json_reply({"error": "down"}, 502))
    request = body()
    model.enqueue(asks("anything"), chat_json("The search failed, sorry."))
    loop = SearchLoop(request, tool=find_web_search_tool(request["tools"]), max_uses=5, secret=SECRET)
    answer = await drive(loop, searcher(fake_servers, client), model, client)
    assert answer["content"][1]["content"] == {"type": "web_search_tool_result_error", "error_code": "unavailable"}
    tool_message = next(m for m in model.chat_requests[1]["messages"] if m["role"] == "tool")
    assert tool_message["content"].startswith("Error: unavailable: the search did not run")
    assert answer["usage"]["server_tool_use"]["web_search_requests"] == 0


async def test_two_searches_asked_at_once_run_together(model, fake_servers, client):
    request = body()
    both = chat_json(None, tool_calls=[ToolCall("call_1", "web_search", '{"query": "one"}'),
                                       ToolCall("call_2", "web_search", '{"query": "two"}')],
                     finish_reason="tool_calls")
    model.enqueue(both, chat_json("Both [example.com](https://www.example.com/news/1)."))
    loop = SearchLoop(request, tool=find_web_search_tool(request["tools"]), max_uses=5, secret=SECRET)
    answer = await drive(loop, searcher(fake_servers, client), model, client)
    assert sorted(fake_servers["searxng"].queries) == ["one", "two"]
    tools = [m for m in model.chat_requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tools] == ["call_1", "call_2"]
    assert [b["type"] for b in answer["content"]] == ["server_tool_use", "web_search_tool_result",
                                                      "server_tool_use", "web_search_tool_result", "text"]
    assert answer["usage"]["server_tool_use"]["web_search_requests"] == 2


async def test_the_web_plugin_searches_the_conversation_and_cites_the_answer(model, fake_servers, client):
    request = {"model": "openai/gpt-fake:online", "max_tokens": 200, "system": "Be brief.",
               "messages": [{"role": "user", "content": "latest gateway release"}]}
    model_id, online = strip_online(request["model"])
    assert model_id == "openai/gpt-fake" and parse_plugins(request.get("plugins")).web is None
    model.enqueue(chat_json("Out now, per [example.com](https://www.example.com/news/1)."))
    answer = await run_web_plugin(request, online, searcher(fake_servers, client), model_caller(model, client),
                                  today=dt.date(2026, 12, 1), secret=SECRET)
    assert fake_servers["searxng"].queries == ["latest gateway release"]
    system = model.chat_requests[0]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    assert "A web search was conducted on 2026-12-01" in system["content"]
    assert "https://docs.example.org/guide" in system["content"]
    parsed = anthropic.types.Message.model_validate(answer)
    assert parsed.content[0].citations[0].url == "https://www.example.com/news/1"
    assert parsed.usage.server_tool_use.web_search_requests == 1
