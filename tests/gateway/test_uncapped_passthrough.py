"""An OpenAI client's request that limits no output, passed through to an upstream of its own API,
may be answered with up to the model's maximum output: the budget reservation counts that, not the
gateway's default `max_tokens` (which only the translated request carries), so a budget holds.

Every model here prices output at $100 per million tokens and may write 100,000 of them: $10 at
most, against a team's daily budget of $1; the gateway's default of 4,096 tokens is $0.41."""
from __future__ import annotations

import openai
import pytest
import yaml

from tests.fakes.anthropic import AnthropicFake
from tests.fakes.openai import OpenAIFake
from tests.fakes.openai_responses import ResponsesFake
from tests.served_process import ServedProcess

KEY = "sk-team-frugal-0001"
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
        "models": [model("cap/gpt", "chat"), model("cap/pro", "resp"), model("cap/claude", "claude")],
        "teams": [{"name": "frugal", "budget_daily_usd": 1.0}],
        "keys": [{"key": KEY, "team": "frugal"}],
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
