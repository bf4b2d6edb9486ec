"""The Gemini fake speaks Google's wire format (read back by the official google-genai SDK), and the
translator's requests and answers make the round trip through it: two turns of function calling with
the thought signature Gemini 3 insists on, streaming in network-sized pieces, errors and countTokens."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from providers.gemini import (
    GeminiOptions,
    GeminiStreamTranslator,
    count_tokens_request,
    count_tokens_result,
    count_tokens_url,
    error_in_response,
    from_gemini_response,
    generate_url,
    map_error,
    retry_delay,
    to_gemini_request,
    upstream_headers,
)
from tests.fakes.gemini import (
    Answer,
    GeminiFake,
    Usage,
    function_call,
    generate_json,
    generate_stream,
    resource_exhausted,
    text,
    thought,
)
from tests.fakes.openai import anthropic_events, assemble_message

MODEL = "gemini-3.5-flash"
ROUTER_MODEL = "google/gemini-3.5-flash"


@pytest.fixture(scope="module")
def server() -> Iterator[GeminiFake]:
    with GeminiFake() as fake:
        yield fake


@pytest.fixture
def fake(server: GeminiFake) -> GeminiFake:
    server.reset()
    server.issued.clear()
    return server


@pytest.fixture
def client(fake: GeminiFake) -> genai.Client:
    return genai.Client(api_key=fake.api_key, http_options=genai_types.HttpOptions(
        base_url=fake.url, api_version="v1beta", retry_options=genai_types.HttpRetryOptions(attempts=1)))


# -- the fake, read by Google's own SDK --------------------------------------------------------------

def test_sdk_reads_a_json_answer_with_thoughts_calls_and_usage(fake: GeminiFake, client: genai.Client) -> None:
    fake.enqueue(generate_json(Answer(parts=[thought("Hmm.", signature="VGg="),
                                             function_call("get_weather", {"city": "Paris"}, signature="Q2FsbA==")],
                                      usage=Usage(prompt=30, candidates=8, thoughts=12, cached=10))))
    response = client.models.generate_content(model=MODEL, contents="Weather in Paris?")
    parts = response.candidates[0].content.parts
    assert parts[0].thought is True and parts[0].thought_signature == b"Th"
    assert parts[1].function_call.name == "get_weather" and parts[1].function_call.args == {"city": "Paris"}
    assert parts[1].thought_signature == b"Call"
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count,
            usage.cached_content_token_count) == (30, 8, 12, 10)
    assert fake.requests[0].path == f"/v1beta/models/{MODEL}:generateContent"


def test_sdk_reads_a_stream_chunk_by_chunk(fake: GeminiFake, client: genai.Client) -> None:
    fake.enqueue(generate_stream(Answer(parts=[text("Hel"), text("lo")], finish_reason="MAX_TOKENS")))
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Hi"))
    assert [c.text for c in chunks] == ["Hel", "lo"]
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    assert (fake.requests[0].path, fake.requests[0].query) == (f"/v1beta/models/{MODEL}:streamGenerateContent",
                                                               "alt=sse")


def test_sdk_counts_tokens_and_sees_google_errors(fake: GeminiFake, client: genai.Client) -> None:
    assert client.models.count_tokens(model=MODEL, contents="x" * 40).total_tokens == 10
    wrong = genai.Client(api_key="AIzaWrongKey", http_options=genai_types.HttpOptions(
        base_url=fake.url, api_version="v1beta", retry_options=genai_types.HttpRetryOptions(attempts=1)))
    with pytest.raises(genai_errors.ClientError) as raised:
        wrong.models.generate_content(model=MODEL, contents="Hi")
    assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT")
    assert fake.requests[-1].headers["x-goog-api-key"] == "AIzaWrongKey"


def test_fake_refuses_a_follow_up_call_without_the_signature_it_issued(fake: GeminiFake,
                                                                      client: genai.Client) -> None:
    fake.enqueue(generate_json(Answer(parts=[function_call("get_weather", {"city": "Paris"},
                                                           signature="SXNzdWVk")])))
    first = client.models.generate_content(model=MODEL, contents="Weather?")
    call = first.candidates[0].content.parts[0]
    history = [genai_types.Content(role="user", parts=[genai_types.Part(text="Weather?")]),
               genai_types.Content(role="model", parts=[genai_types.Part(function_call=call.function_call)]),
               genai_types.Content(role="user", parts=[genai_types.Part.from_function_response(
                   name="get_weather", response={"output": "Sunny"})])]
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_content(model=MODEL, contents=history)
    assert raised.value.code == 400 and "thought_signature" in raised.value.message
    history[1] = first.candidates[0].content  # the part as issued, signature included
    assert client.models.generate_content(model=MODEL, contents=history).text == "Hello from the Gemini fake."


# -- the translator through the fake -------------------------------------------------------------------

TOOLS = [{"name": "get_weather", "description": "Current weather",
          "input_schema": {"type": "object", "additionalProperties": False,
                           "properties": {"city": {"type": "string", "description": "City name"}},
                           "required": ["city"]}}]
BODY: dict[str, Any] = {"model": ROUTER_MODEL, "max_tokens": 64, "system": "Be brief.", "tools": TOOLS,
                        "thinking": {"type": "enabled", "budget_tokens": 1024},
                        "messages": [{"role": "user", "content": "Weather in Paris?"}]}


def generate(fake: GeminiFake, body: dict[str, Any]) -> httpx.Response:
    request, _ = to_gemini_request(body, options=GeminiOptions())
    return httpx.post(generate_url(fake.base_url, MODEL, False), json=request, headers=upstream_headers(fake.api_key))


def test_two_turns_of_function_calling_carry_the_signature_back(fake: GeminiFake) -> None:
    fake.enqueue(generate_json(Answer(parts=[thought("Look it up.", signature="VGhvdWdodA=="),
                                             function_call("get_weather", {"city": "Paris"},
                                                           signature="Rmlyc3RDYWxsU2ln")])))
    response = generate(fake, BODY)
    assert response.status_code == 200 and error_in_response(response.json()) is None
    first = from_gemini_response(response.json(), model=ROUTER_MODEL, provider="google", message_id="msg_1")
    assert first["stop_reason"] == "tool_use" and [b["type"] for b in first["content"]] == ["thinking", "tool_use"]
    call = first["content"][1]
    second_body = {**BODY, "messages": [*BODY["messages"], {"role": "assistant", "content": first["content"]},
                                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                                                      "content": "18°C, clear"}]}]}
    response = generate(fake, second_body)
    assert response.status_code == 200, response.text
    second = from_gemini_response(response.json(), model=ROUTER_MODEL, provider="google", message_id="msg_2")
    assert second["content"][-1] == {"type": "text", "text": "Hello from the Gemini fake."}
    sent = fake.generate_requests()[1]["contents"]
    assert sent[1]["parts"][1] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                   "thoughtSignature": "Rmlyc3RDYWxsU2ln"}
    assert sent[2]["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"output": "18°C, clear"}}}]


def test_a_follow_up_whose_call_lost_its_signature_is_refused_as_the_clients_error(fake: GeminiFake) -> None:
    fake.enqueue(generate_json(Answer(parts=[function_call("get_weather", {"city": "Paris"}, signature="U2ln")])))
    first = from_gemini_response(generate(fake, BODY).json(), model=ROUTER_MODEL, provider="google")
    call = {**first["content"][0], "id": "toolu_rewritten_by_client"}
    request, _ = to_gemini_request({**BODY, "messages": [
        *BODY["messages"], {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "x"}]}]},
        options=GeminiOptions(foreign_call_signature=None))
    response = httpx.post(generate_url(fake.base_url, MODEL, False), json=request,
                          headers=upstream_headers(fake.api_key))
    assert map_error(response.status_code, response.content)[:2] == (400, "invalid_request_error")


def test_stream_round_trip_in_network_sized_pieces(fake: GeminiFake) -> None:
    fake.enqueue(generate_stream(Answer(parts=[thought("Checking", signature="U2ln"), text("It is "), text("sunny.")],
                                        usage=Usage(prompt=40, candidates=4, thoughts=9, cached=30))))
    request, _ = to_gemini_request({**BODY, "stream": True}, options=GeminiOptions())
    translator = GeminiStreamTranslator(model=ROUTER_MODEL, provider="google", message_id="msg_s")
    raw: list[bytes] = []
    with httpx.stream("POST", generate_url(fake.base_url, MODEL, True), json=request,
                      headers=upstream_headers(fake.api_key)) as response:
        assert response.headers["content-type"] == "text/event-stream"
        for piece in response.iter_raw(chunk_size=7):
            raw += translator.feed(piece)
    raw += translator.finish()
    message = assemble_message(anthropic_events(raw))
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature == "gemini:U2ln" and message.content[1].text == "It is sunny."
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == \
        (10, 30, 13)
    assert translator.finished and translator.close_usage().output_tokens == 13


def test_rate_limit_maps_with_the_delay_google_asks_for(fake: GeminiFake) -> None:
    fake.enqueue(resource_exhausted(retry_seconds=9))
    response = generate(fake, BODY)
    assert map_error(response.status_code, response.content)[:2] == (429, "rate_limit_error")
    assert retry_delay(response.content) == 9.0


def test_count_tokens_counts_the_system_instruction_and_tools(fake: GeminiFake) -> None:
    def count(body: dict[str, Any]) -> int:
        response = httpx.post(count_tokens_url(fake.base_url, MODEL), headers=upstream_headers(fake.api_key),
                              json=count_tokens_request(body, model=MODEL))
        assert response.status_code == 200, response.text
        return count_tokens_result(response.json())

    bare = count({"model": ROUTER_MODEL, "messages": BODY["messages"]})
    assert bare == 5  # "Weather in Paris?": 17 characters, 4 a token in the fake
    assert count(BODY) > bare + 10
    request = fake.requests[-1].json()["generateContentRequest"]
    assert request["model"] == f"models/{MODEL}" and "generationConfig" not in request
    assert count_tokens_result({}) == 0
