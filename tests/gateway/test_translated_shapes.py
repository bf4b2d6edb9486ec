"""A body of another shape than the Messages API's, on a protocol the gateway translates (chat
completions, Responses, Gemini, and the search loop), is the client's 400 naming where, as an
Anthropic upstream would answer it; it never reaches the upstream, and never crashes a translator
into a 500."""
from __future__ import annotations

import httpx
import pytest
import yaml

from tests.conftest import TEAM_KEY
from tests.fakes.gemini import GeminiFake
from tests.fakes.openai import OpenAIFake
from tests.fakes.openai_responses import ResponsesFake
from tests.fakes.search import SearxngFake
from tests.served_process import ServedProcess

MODELS = {"chat": "chat/model", "responses": "resp/model", "gemini": "gem/model"}
MALFORMED = {
    "content a number": ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    "a message not an object": ({"messages": ["hi"]}, "messages.0"),
    "a block not an object": ({"messages": [{"role": "user", "content": [7]}]}, "messages.0.content.0"),
    "a source a number": ({"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
                          "messages.0.content.0.source"),
    "tools an object": ({"tools": {"name": "f"}, "messages": [{"role": "user", "content": "hi"}]}, "tools"),
    "system a number": ({"system": 7, "messages": [{"role": "user", "content": "hi"}]}, "system"),
    "a tool_result's content a number": (
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 3}]}]},
        "messages.0.content.0.content"),
}


@pytest.fixture(scope="module")
def fakes():
    with OpenAIFake() as chat, ResponsesFake() as responses, GeminiFake(api_key=None) as gemini, \
            SearxngFake() as searxng:
        yield {"chat": chat, "responses": responses, "gemini": gemini, "searxng": searxng}


@pytest.fixture(scope="module")
def served(tmp_path_factory, fakes):
    config = {
        "providers": {"chat": {"protocol": "openai", "base_url": fakes["chat"].url + "/v1"},
                      "resp": {"protocol": "openai-responses", "base_url": fakes["responses"].url + "/v1",
                               "api_key": fakes["responses"].api_key},
                      "gem": {"protocol": "gemini", "base_url": fakes["gemini"].base_url}},
        "models": [{"id": model, "endpoints": [{"provider": model.split("/")[0], "upstream_model": "m-1"}]}
                   for model in MODELS.values()],
        "keys": [{"key": TEAM_KEY, "team": "team-a"}],
        "search": {"searxng_url": fakes["searxng"].url, "token_secret": "a-secret-of-thirty-two-characters"},
    }
    path = tmp_path_factory.mktemp("shapes") / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with ServedProcess(["--config", str(path)]) as process:
        yield process


def post(served, path: str, body: dict) -> httpx.Response:
    return httpx.post(served.url + path, headers={"x-api-key": TEAM_KEY, "anthropic-version": "2023-06-01"},
                      json=body, timeout=10)


@pytest.mark.parametrize("protocol", list(MODELS))
@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_body_of_another_shape_is_a_400_naming_where(served, fakes, protocol, name):
    fake = fakes[protocol]
    fake.reset()
    members, where = MALFORMED[name]
    response = post(served, "/v1/messages", {"model": MODELS[protocol], "max_tokens": 20, **members})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(where + ": expected "), error["message"]
    assert fake.requests == []  # the upstream never saw it
    assert "Traceback" not in served.output


def test_the_same_bodies_well_shaped_are_served(served, fakes):
    for protocol, model in MODELS.items():
        response = post(served, "/v1/messages", {"model": model, "max_tokens": 20, "system": "be brief",
                                                 "messages": [{"role": "user", "content": [{"type": "text",
                                                                                            "text": "hi"}]}]})
        assert response.status_code == 200, (protocol, response.text)


def test_counting_the_tokens_of_such_a_body_on_gemini_is_a_400_too(served, fakes):
    fakes["gemini"].reset()
    response = post(served, "/v1/messages/count_tokens",
                    {"model": MODELS["gemini"], "messages": [{"role": "user", "content": 5}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("messages.0.content: expected ")
    assert fakes["gemini"].requests == []


def test_a_search_request_of_another_shape_is_a_400_before_any_search(served, fakes):
    fakes["chat"].reset()
    response = post(served, "/v1/messages", {
        "model": MODELS["chat"], "max_tokens": 20, "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "search"}, 9]}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("messages.0.content.1: expected ")
    assert fakes["searxng"].queries == [] and fakes["chat"].requests == []
