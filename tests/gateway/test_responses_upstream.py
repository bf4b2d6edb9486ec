"""`gateway serve` with `openai` pointed at a Responses API fake, driven with the official Anthropic SDK:
a streamed tool call, the second turn carrying reasoning and the call's output, images, cached-token
usage, `max_output_tokens`, errors, model listing and count_tokens (estimated locally)."""
from __future__ import annotations

import anthropic
import pytest

from tests.fakes import openai_responses as r
from tests.gateway.sdk_upstreams import PIXEL, WEATHER_TOOL, image_question, sdk, serve

OPENAI_KEY = "sk-upstream-secret-responses-0001"


@pytest.fixture(scope="module")
def responses_fake():
    with r.ResponsesFake(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def served(tmp_path_factory, responses_fake):
    providers = {"openai": {"base_url": responses_fake.url + "/v1", "api_key": OPENAI_KEY}}
    with serve(tmp_path_factory.mktemp("responses"), providers) as process:
        yield process


@pytest.fixture
def responses(responses_fake):
    responses_fake.reset()
    return responses_fake


def test_models_list_the_responses_only_model(served):
    ids = [m.id for m in sdk(served).models.list(limit=100)]
    assert "openai/gpt-5.5-pro" in ids


def test_responses_streamed_tool_call_then_second_turn_carries_reasoning_and_call_output(served, responses):
    responses.enqueue(r.responses_stream(r.Script(items=[
        r.Reasoning(summary=(("Need ", "the weather."),), encrypted_content="gAAAAABencrypted-turn-one=="),
        r.Text.of("Let me ", "check."),
        r.FunctionCall(call_id="call_w1", name="get_weather", arguments=['{"ci', 'ty": "Pa', 'ris"}'])],
        usage=r.Usage(input_tokens=1200, output_tokens=40, cached_tokens=1000))))
    client = sdk(served)
    question = {"role": "user", "content": "Weather in Paris?"}
    with client.messages.stream(model="openai/gpt-5.5-pro", max_tokens=2000, tools=[WEATHER_TOOL],
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[question]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool_use = final.content
    assert thinking.thinking == "Need the weather." and thinking.signature
    assert text.text == "Let me check."
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.model == "openai/gpt-5.5-pro"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (200, 1000, 40)
    first = responses.responses_requests[0]
    assert first["stream"] is True and first["store"] is False
    assert first["include"] == ["reasoning.encrypted_content"] and first["reasoning"]["summary"] == "auto"
    assert first["tools"][0]["type"] == "function" and first["tools"][0]["name"] == "get_weather"

    responses.enqueue(r.responses_json(r.Script(items=[r.Text.of("Sunny, 21 C.")])))
    answer = client.messages.create(
        model="openai/gpt-5.5-pro", max_tokens=2000, tools=[WEATHER_TOOL],
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[question, {"role": "assistant", "content": [b.model_dump() for b in final.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                                "content": "21 C, sunny"}]}])
    assert answer.content[0].text == "Sunny, 21 C." and answer.stop_reason == "end_turn"
    second = responses.responses_requests[1]
    assert r.responses_request_errors(second) == []
    items = second["input"]
    reasoning = [i for i in items if i.get("type") == "reasoning"]
    assert reasoning and reasoning[0]["encrypted_content"] == "gAAAAABencrypted-turn-one=="
    call = [i for i in items if i.get("type") == "function_call"][0]
    output = [i for i in items if i.get("type") == "function_call_output"][0]
    assert call["call_id"] == output["call_id"] == "call_w1" and output["output"] == "21 C, sunny"
    assert items.index(reasoning[0]) < items.index(call) < items.index(output)


def test_responses_image_and_usage_as_json(served, responses):
    responses.enqueue(r.responses_json(r.Script(items=[r.Text.of("A single pixel.")],
                                                usage=r.Usage(input_tokens=900, output_tokens=7, cached_tokens=800))))
    answer = sdk(served).messages.create(model="openai/gpt-5.5-pro", max_tokens=100, messages=[image_question("What is this?")])
    assert answer.content[0].text == "A single pixel."
    assert (answer.usage.input_tokens, answer.usage.cache_read_input_tokens, answer.usage.output_tokens) == (100, 800, 7)
    sent = responses.responses_requests[0]
    assert r.responses_request_errors(sent) == []
    parts = sent["input"][0]["content"]
    assert parts[0] == {"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}", "detail": "auto"}
    assert sent["max_output_tokens"] == 100


def test_responses_incomplete_answer_stops_at_max_tokens(served, responses):
    responses.enqueue(r.responses_stream(r.Script(items=[r.Text.of("Cut ", "short")], status="incomplete")))
    with sdk(served).messages.stream(model="openai/gpt-5.5-pro", max_tokens=16,
                                     messages=[{"role": "user", "content": "Write a long essay."}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.content[0].text == "Cut short"


def test_responses_errors_become_anthropic_errors(served, responses):
    responses.enqueue(r.context_window_exceeded())
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(served).messages.create(model="openai/gpt-5.5-pro", max_tokens=50,
                                    messages=[{"role": "user", "content": "Too long"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    responses.enqueue(r.invalid_api_key(OPENAI_KEY))
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk(served).messages.create(model="openai/gpt-5.5-pro", max_tokens=50,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert failed.value.status_code == 502 and OPENAI_KEY not in failed.value.response.text
    assert failed.value.response.headers["x-gateway-attempts"] == "openai/openai/gpt-5.5-pro=401"


def test_responses_count_tokens_is_estimated_locally(served, responses):
    counted = sdk(served).messages.count_tokens(model="openai/gpt-5.5-pro",
                                                messages=[{"role": "user", "content": "How many tokens is this?"}])
    assert counted.input_tokens > 0 and responses.requests == []
