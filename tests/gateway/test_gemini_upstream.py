"""`gateway serve` with `google` pointed at a native Gemini fake, driven with the official Anthropic SDK:
a two-turn function call carrying the thought signature, thinking, images, cached-token usage,
finishReason and Google errors, and count_tokens through countTokens."""
from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import TEAM_KEY
from tests.fakes import gemini as g
from tests.gateway.sdk_upstreams import PIXEL, WEATHER_TOOL, image_question, sdk, serve

GOOGLE_KEY = "AIzaUpstreamSecretGoogle0123456789abcdef"


@pytest.fixture(scope="module")
def gemini_fake():
    with g.GeminiFake(api_key=GOOGLE_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def served(tmp_path_factory, gemini_fake):
    providers = {"google": {"base_url": gemini_fake.base_url, "api_key": GOOGLE_KEY}}
    with serve(tmp_path_factory.mktemp("gemini"), providers) as process:
        yield process


@pytest.fixture
def gemini(gemini_fake):
    gemini_fake.reset()
    return gemini_fake


def test_models_list_gemini(served):
    ids = [m.id for m in sdk(served).models.list(limit=100)]
    assert "google/gemini-3.5-flash" in ids


def test_gemini_two_turn_function_call_carries_the_thought_signature(served, gemini):
    client = sdk(served)
    question = {"role": "user", "content": "Weather in Paris?"}
    with client.messages.stream(model="google/gemini-3.5-flash", max_tokens=500, tools=[WEATHER_TOOL],
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=[question]) as stream:
        final = stream.get_final_message()
    tool_use = [b for b in final.content if b.type == "tool_use"][0]
    assert final.stop_reason == "tool_use" and tool_use.name == "get_weather"
    first = gemini.generate_requests()[0]
    declaration = first["tools"][0]["functionDeclarations"][0]
    assert "additionalProperties" not in str(declaration) and "$schema" not in str(declaration)
    assert first["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"
    issued = set(gemini.issued)
    assert issued

    answer = client.messages.create(
        model="google/gemini-3.5-flash", max_tokens=500, tools=[WEATHER_TOOL],
        messages=[question, {"role": "assistant", "content": [b.model_dump() for b in final.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                                "content": "21 C, sunny"}]}])
    assert answer.content[-1].text == "Hello from the Gemini fake."  # the fake accepted the signature
    second = gemini.generate_requests()[1]
    model_turn = [c for c in second["contents"] if c.get("role") == "model"][0]
    call = [p for p in model_turn["parts"] if "functionCall" in p][0]
    assert call["thoughtSignature"] in issued
    response = [p for c in second["contents"] for p in c["parts"] if "functionResponse" in p][0]
    assert response["functionResponse"]["name"] == "get_weather"


def test_gemini_thinking_streams_as_a_thinking_block(served, gemini):
    with sdk(served).messages.stream(model="google/gemini-3.5-flash", max_tokens=2000,
                                     thinking={"type": "enabled", "budget_tokens": 1024},
                                     messages=[{"role": "user", "content": "Think first."}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Thinking it over." and final.content[0].signature
    config = gemini.generate_requests()[0]["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    assert config["maxOutputTokens"] == 2000


def test_gemini_image_and_cached_usage(served, gemini):
    gemini.enqueue(g.generate_json(g.Answer(parts=[g.text("A pixel.")],
                                            usage=g.Usage(prompt=1200, candidates=30, thoughts=10, cached=1000))))
    answer = sdk(served).messages.create(model="google/gemini-3.5-flash", max_tokens=100, messages=[image_question("What is this?")])
    assert answer.content[0].text == "A pixel."
    assert (answer.usage.input_tokens, answer.usage.cache_read_input_tokens, answer.usage.output_tokens) == (200, 1000, 40)
    parts = gemini.generate_requests()[0]["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": PIXEL}}


def test_gemini_errors_become_anthropic_errors(served, gemini):
    gemini.enqueue(g.resource_exhausted(retry_seconds=30))
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk(served).messages.create(model="google/gemini-3.5-flash", max_tokens=50,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    gemini.enqueue(g.invalid_argument("* GenerateContentRequest.contents[0].parts: bad part"))
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk(served).messages.create(model="google/gemini-3.5-flash", max_tokens=50,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    # A malformed function call is the upstream's failure (502): retried, and the retry answers.
    gemini.enqueue(g.generate_json(g.Answer(parts=[], finish_reason="MALFORMED_FUNCTION_CALL")))
    retried = sdk(served).messages.with_raw_response.create(model="google/gemini-3.5-flash", max_tokens=50,
                                                            messages=[{"role": "user", "content": "Hi"}])
    assert retried.headers["x-gateway-attempts"] == \
        "google/google/gemini-3.5-flash=502,google/google/gemini-3.5-flash=ok"
    assert retried.parse().content[0].text == "Hello from the Gemini fake."
    gemini.enqueue(g.api_key_invalid())
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk(served).messages.create(model="google/gemini-3.5-flash", max_tokens=50,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert failed.value.status_code == 502 and GOOGLE_KEY not in failed.value.response.text
    # Google answers an invalid key with 400 API_KEY_INVALID: our key, not the client's request.
    assert failed.value.response.headers["x-gateway-attempts"] == "google/google/gemini-3.5-flash=401"


def test_gemini_count_tokens_uses_count_tokens(served, gemini):
    body = {"model": "google/gemini-3.5-flash", "system": "Be brief.",
            "messages": [{"role": "user", "content": "How many tokens is this?"}]}
    counted = httpx.post(served.url + "/v1/messages/count_tokens", json=body,
                         headers={"x-api-key": TEAM_KEY, "anthropic-version": "2023-06-01"})
    assert counted.status_code == 200
    sent = [q for q in gemini.requests if q.path.endswith(":countTokens")]
    assert len(sent) == 1
    inner = sent[0].json()["generateContentRequest"]
    assert counted.json() == {"input_tokens": g.token_count(inner)}
    assert inner["systemInstruction"]["parts"][0]["text"] == "Be brief."
