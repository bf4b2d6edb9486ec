"""An OpenAI client's request that limits no output, passed through to an upstream of its own API,
may be answered with up to the model's maximum output: the budget reservation counts that, not the
gateway's default `max_tokens` (which only the translated request carries), so a budget holds.

Every model here prices output at $100 per million tokens and may write 100,000 of them: $10 at
most, against a team's daily budget of $1; the gateway's default of 4,096 tokens is $0.41."""
from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
import yaml

from tests.fakes.anthropic import AnthropicFake
from tests.fakes.openai import OpenAIFake, StreamScript, Usage, chat_stream
from tests.fakes.openai_responses import ResponsesFake
from tests.served_process import ServedProcess

KEY = "sk-team-frugal-0001"
TIGHT_KEY = "sk-team-tight-0002"
ADMIN = "sk-admin-uncapped-0000"
PRICING = {"input": 0.0, "output": 100.0}


@pytest.fixture(scope="module")
def fakes():
    with OpenAIFake() as chat, ResponsesFake() as responses, AnthropicFake() as claude:
        yield {"chat": chat, "responses": responses, "claude": claude}


@pytest.fixture(scope="module")
def served(tmp_path_factory, fakes):
    def model(model_id: str, provider: str) -> dict:
        return {"id": model_id, "max_output": 100_000,
                "endpoints": [{"provider": provider, "upstream_model": "m-1", "pricing": PRICING}]}

    config = {
        "providers": {"chat": {"protocol": "openai", "base_url": fakes["chat"].url + "/v1"},
                      "resp": {"protocol": "openai-responses", "base_url": fakes["responses"].url + "/v1",
                               "api_key": fakes["responses"].api_key},
                      "claude": {"protocol": "anthropic", "base_url": fakes["claude"].url, "api_key": "sk-ant-x"}},
        "models": [model("cap/gpt", "chat"), model("cap/pro", "resp"), model("cap/claude", "claude"),
                   # A self-hosted model whose maximum output the catalog does not know.
                   {"id": "cap/unknown", "endpoints": [{"provider": "chat", "upstream_model": "m-2",
                                                        "pricing": PRICING}]}],
        "teams": [{"name": "frugal", "budget_daily_usd": 1.0}, {"name": "tight", "budget_daily_usd": 0.5}],
        "keys": [{"key": KEY, "team": "frugal"}, {"key": TIGHT_KEY, "team": "tight"}],
        "admin_key": ADMIN,
    }
    path = tmp_path_factory.mktemp("uncapped") / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with ServedProcess(["--config", str(path)]) as process:
        yield process


@pytest.fixture
def sdk(served, fakes):
    for fake in fakes.values():
        fake.reset()
    # The SDK's default retries: a budget refusal says not to retry, and the error comes at once.
    return openai.OpenAI(base_url=served.url + "/v1", api_key=KEY)


HI = [{"role": "user", "content": "hi"}]


def test_an_uncapped_chat_request_to_an_openai_upstream_is_reserved_at_the_models_maximum(sdk, fakes):
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="cap/gpt", messages=HI)
    assert "worst case (10.00 USD" in refused.value.message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert fakes["chat"].requests == []
    answer = sdk.chat.completions.create(model="cap/gpt", messages=HI, max_completion_tokens=1000)
    assert answer.choices[0].message.content
    assert len(fakes["chat"].requests) == 1


def test_an_uncapped_responses_request_to_a_responses_upstream_is_reserved_at_the_models_maximum(sdk, fakes):
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.responses.create(model="cap/pro", input="hi")
    assert "worst case (10.00 USD" in refused.value.message
    assert fakes["responses"].requests == []
    answer = sdk.responses.create(model="cap/pro", input="hi", max_output_tokens=1000)
    assert answer.output_text


def test_a_translated_request_carries_the_default_limit_and_is_reserved_at_it(sdk, fakes):
    answer = sdk.chat.completions.create(model="cap/claude", messages=HI)
    assert answer.choices[0].message.content
    assert fakes["claude"].requests[-1].json()["max_tokens"] == 4096


def test_an_uncapped_stream_from_a_model_of_unknown_maximum_is_cut_at_its_reservation(served, fakes):
    # Reserved at the default 4,096 tokens ($0.41 of the team's $0.5); the upstream writes some
    # 10,000 tokens of text and reports its usage only at the end.
    fakes["chat"].reset()
    fakes["chat"].enqueue(chat_stream(StreamScript(text=["word " * 40] * 200, model="m-2",
                                                   usage=Usage(prompt_tokens=10, completion_tokens=10_000)),
                                      delay_between=0.002))  # the relay checks the budget a read at a time
    with httpx.stream("POST", served.url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {TIGHT_KEY}"},
                      json={"model": "cap/unknown", "stream": True, "messages": HI}) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        request_id = response.headers["x-request-id"]
    last = json.loads(lines[-1][6:])
    assert "budget" in last["error"]["message"], last
    sent = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in lines[:-1] if json.loads(line[6:]).get("choices"))
    # Cut once past the reserved output (about 14,300 characters at 3.5 a token), a read at a time.
    assert 4096 * 3 < len(sent) < 30_000
    deadline = time.monotonic() + 10
    while True:
        rows = httpx.get(served.url + "/admin/requests", params={"team": "tight"},
                         headers={"x-api-key": ADMIN}).json()["data"]
        row = next((r for r in rows if r["request_id"] == request_id), None)
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (row["status"], row["limited_by"], row["estimated"]) == (429, "budget", True)
    assert row["cost_usd"] <= 0.5  # the budget holds
