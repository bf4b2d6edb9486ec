"""The offline demo as the official SDK sees it: the mock providers call tools and think, and the
two of them (`mock` cheaper and slower, `mock-fast` dearer and quicker) make routing visible."""
from __future__ import annotations

import anthropic
import jsonschema
import pytest
import yaml

from tests.fakes.base import wait_for
from tests.served_process import ServedProcess

KEY = "sk-demo-routing-key-1"
WEATHER = {"name": "get_weather", "description": "Current weather for a place",
           "input_schema": {"type": "object",
                            "properties": {"location": {"type": "string"},
                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                           "days": {"type": "integer", "minimum": 1}},
                            "required": ["location", "unit"]}}
CLOCK = {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}},
                                              "required": ["zone"]}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def demo():
    with ServedProcess(["--demo"], env={"GATEWAY_DEMO_KEY": KEY}) as served:
        yield served


@pytest.fixture
def client(demo):
    return anthropic.Anthropic(base_url=demo.url, api_key=KEY, max_retries=0)


def tool_uses(message) -> list:
    return [b for b in message.content if b.type == "tool_use"]


def test_mock_calls_the_named_tool_with_an_input_matching_its_schema(client):
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=ASK, tools=[CLOCK, WEATHER],
                                     tool_choice={"type": "tool", "name": "get_weather"})
    assert message.stop_reason == "tool_use"
    [use] = tool_uses(message)
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    assert set(use.input) == {"location", "unit"}
    jsonschema.validate(use.input, WEATHER["input_schema"])


def test_mock_with_tool_choice_auto_calls_the_tool_the_prompt_names(client):
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, tools=[WEATHER, CLOCK],
                                     messages=[{"role": "user", "content": "call get_time for Tokyo"}])
    assert [u.name for u in tool_uses(message)] == ["get_time"]


def test_mock_answers_in_text_after_a_tool_result_and_with_tool_choice_none(client):
    first = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=ASK, tools=[WEATHER])
    [use] = tool_uses(first)
    follow_up = ASK + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                       {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}]}]
    answer = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=follow_up, tools=[WEATHER])
    assert answer.stop_reason == "end_turn" and not tool_uses(answer)
    refused = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=ASK, tools=[WEATHER],
                                     tool_choice={"type": "none"})
    assert refused.stop_reason == "end_turn" and not tool_uses(refused)


def test_mock_streams_a_tool_call_that_the_sdk_assembles(client):
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=200, messages=ASK, tools=[WEATHER],
                                tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [use] = tool_uses(final)
    jsonschema.validate(use.input, WEATHER["input_schema"])
    assert set(use.input) == {"location", "unit"}


def test_mock_thinks_first_when_thinking_is_enabled_in_json_and_in_streams(client):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(model="claude-opus-4-8", max_tokens=2048, messages=ASK, thinking=thinking)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking and message.content[0].signature
    with client.messages.stream(model="claude-opus-4-8", max_tokens=2048, messages=ASK, thinking=thinking) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == message.content[0].thinking
    assert final.content[0].signature == message.content[0].signature


def streamed_by(client, provider: dict) -> str:
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=20, messages=ASK,
                                extra_body={"provider": provider}) as stream:
        return stream.get_final_message().model_dump()["provider"]


def served_by(client, provider: dict) -> str:
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=20, messages=ASK,
                                                   extra_body={"provider": provider})
    message = raw.parse()
    assert raw.headers["x-gateway-provider"] == message.provider
    return message.provider


def test_provider_order_and_only_choose_which_mock_answers(client):
    assert served_by(client, {"order": ["mock-fast"]}) == "mock-fast"
    assert served_by(client, {"order": ["mock"]}) == "mock"
    assert served_by(client, {"only": ["mock-fast"]}) == "mock-fast"
    assert served_by(client, {"ignore": ["mock-fast"]}) == "mock"


def test_sort_by_price_picks_the_cheap_mock_and_by_latency_the_fast_one(client):
    assert served_by(client, {"sort": "price"}) == "mock"
    for name in ("mock", "mock-fast"):  # measure both: time to first token, and tokens per second in a stream
        assert streamed_by(client, {"order": [name]}) == name
    # Measurements reach the routing view at its next refresh, within a second.
    assert wait_for(lambda: served_by(client, {"sort": "latency"}) == "mock-fast", timeout=5, interval=0.2)
    assert wait_for(lambda: served_by(client, {"sort": "throughput"}) == "mock-fast", timeout=5, interval=0.2)
    assert served_by(client, {"sort": "price"}) == "mock"


def test_an_overloaded_mock_falls_back_to_the_other_one(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"providers": {"mock-fast": {
        "protocol": "mock", "base_url": "mock://local", "options": {"fail_status": 529}}}}))
    with ServedProcess(["--demo", "--config", str(config)], env={"GATEWAY_DEMO_KEY": KEY}) as served:
        client = anthropic.Anthropic(base_url=served.url, api_key=KEY, max_retries=0)
        raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=20, messages=ASK,
                                                       extra_body={"provider": {"order": ["mock-fast"]}})
        assert raw.parse().provider == "mock"
        attempts = raw.headers["x-gateway-attempts"].split(",")
        assert attempts[0] == "mock-fast/anthropic/claude-haiku-4.5=529"
        assert attempts[-1] == "mock/anthropic/claude-haiku-4.5=ok"
        with pytest.raises(anthropic.InternalServerError) as refused:
            client.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=ASK,
                                   extra_body={"provider": {"order": ["mock-fast"], "allow_fallbacks": False}})
        assert refused.value.status_code == 529
