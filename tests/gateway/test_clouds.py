"""Claude through the clouds, driven with the official Anthropic SDK: Bedrock InvokeModel signed
with SigV4 (JSON and the binary event stream), Bedrock's Messages path, Claude on Vertex AI with
service-account tokens, and Azure OpenAI with its `api-key` and its deployment path. Each fake
checks what the cloud checks (a recomputed signature, a token its token endpoint issued, the
`api-key` and `api-version`), so a request the gateway did not authenticate right is refused."""
from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import TEAM_KEY
from tests.fakes import anthropic as anthropic_fake
from tests.fakes import bedrock as bedrock_fake
from tests.fakes.azure import AzureFake
from tests.fakes.bedrock import BedrockFake
from tests.fakes.openai import StreamScript, ToolCall, chat_stream
from tests.fakes.vertex import VertexFake, google_error
from tests.gateway_server import GatewayThread

AWS_KEY = ("AKIAFAKECLOUDSAAAAAAA", "cloudsSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
BEDROCK_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
AZURE_KEY = "azure-resource-key-0123456789abcdef"
WEATHER_TOOL = {"name": "get_weather", "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PRICING = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.3}


@pytest.fixture(scope="module")
def bedrock():
    with BedrockFake(keys={AWS_KEY[0]: (AWS_KEY[1], None)}) as fake:
        yield fake


@pytest.fixture(scope="module")
def vertex(tmp_path_factory):
    with VertexFake() as fake:
        fake.key_file = fake.write_service_account(tmp_path_factory.mktemp("vertex") / "sa.json")
        yield fake


@pytest.fixture(scope="module")
def azure():
    with AzureFake(api_key=AZURE_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(bedrock, vertex, azure):
    providers = {
        "bedrock-iam": {"protocol": "bedrock", "base_url": bedrock.url, "region": "us-east-1",
                        "aws_access_key_id": AWS_KEY[0], "aws_secret_access_key": AWS_KEY[1]},
        "bedrock-messages": {"protocol": "anthropic", "base_url": bedrock.url + "/anthropic", "auth": "sigv4",
                             "region": "us-east-1", "aws_access_key_id": AWS_KEY[0],
                             "aws_secret_access_key": AWS_KEY[1]},
        "vertex": {"protocol": "vertex", "base_url": vertex.url, "credentials_file": str(vertex.key_file),
                   "region": "us-east5"},
        "azure-v1": {"protocol": "openai", "base_url": azure.url + "/openai/v1", "auth": "azure",
                     "api_key": AZURE_KEY},
        "azure-deployment": {"protocol": "azure", "base_url": azure.url, "api_key": AZURE_KEY,
                             "api_version": "2024-10-21"},
        "azure-entra": {"protocol": "azure", "base_url": azure.url, "tenant_id": azure.tenant_id,
                        "client_id": azure.client_id, "client_secret": azure.client_secret,
                        "authority_host": azure.url, "api_version": "2024-10-21"},
    }
    models = [
        {"id": "clouds/bedrock", "endpoints": [{"provider": "bedrock-iam", "upstream_model": BEDROCK_MODEL,
                                                "pricing": PRICING}]},
        {"id": "clouds/bedrock-messages", "endpoints": [{"provider": "bedrock-messages",
                                                         "upstream_model": BEDROCK_MODEL, "pricing": PRICING}]},
        {"id": "clouds/vertex", "endpoints": [{"provider": "vertex", "upstream_model": "claude-sonnet-4-5@20250929",
                                               "pricing": PRICING}]},
        {"id": "clouds/vertex-gemini", "endpoints": [{"provider": "vertex", "upstream_model": "gemini-2.5-flash",
                                                      "options": {"protocol": "gemini"}}]},
        {"id": "clouds/azure-v1", "endpoints": [{"provider": "azure-v1", "upstream_model": "gpt-5-4-prod"}]},
        {"id": "clouds/azure-deployment", "endpoints": [{"provider": "azure-deployment",
                                                         "upstream_model": "gpt-5-4-prod"}]},
        {"id": "clouds/azure-entra", "endpoints": [{"provider": "azure-entra", "upstream_model": "gpt-5-4-prod"}]},
    ]
    with GatewayThread(providers=providers, models=models, keys=[{"key": TEAM_KEY, "team": "team-a"}],
                       retries={"per_endpoint": 1}) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(bedrock, vertex, azure):
    for fake in (bedrock, vertex, vertex.gemini, azure):
        fake.reset()
    bedrock.refused.clear()
    bedrock.signed_by.clear()


def sdk(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=TEAM_KEY, max_retries=0)


# A streamed answer that thinks, then calls a tool.
THINKING_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_bdrk01", "type": "message", "role": "assistant",
                                          "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": None,
                                          "stop_sequence": None, "usage": {"input_tokens": 120, "output_tokens": 1,
                                                                           "cache_read_input_tokens": 100}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Paris: tool."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2lnbmVk"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_bdrk01",
                                                                  "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                          "partial_json": '{"city": "Par'}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'is"}'}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 42}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 120, "outputTokenCount": 42,
                                                                 "invocationLatency": 400, "firstByteLatency": 90}},
]


def thinking_frames() -> list[bytes]:
    """The answer as InvokeModelWithResponseStream frames it."""
    return [bedrock_fake.chunk_frame(event) for event in THINKING_EVENTS]


def thinking_sse() -> list[bytes]:
    """The answer as Anthropic's own SSE, which Vertex streams (without Bedrock's metrics)."""
    return [anthropic_fake.event(event["type"], {k: v for k, v in event.items()
                                                 if k != "amazon-bedrock-invocationMetrics"})
            for event in THINKING_EVENTS]


# -- Bedrock InvokeModel, SigV4 -----------------------------------------------------------------------

def test_bedrock_json_answer_is_signed_and_reaches_the_sdk_with_usage_and_cost(gw, bedrock):
    message = sdk(gw).messages.create(model="clouds/bedrock", max_tokens=5,
                                      messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "tok " * 5
    assert message.model == "clouds/bedrock"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)
    assert message.usage.model_extra["cost"] == pytest.approx((10 * 3.0 + 5 * 15.0) / 1e6)
    assert bedrock.signed_by == [AWS_KEY[0]] and not bedrock.refused
    sent = bedrock.requests[-1]
    # The model id is one URL segment (its colon encoded), and the body is InvokeModel's.
    assert sent.path == f"/model/{BEDROCK_MODEL}/invoke"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY[0]}/")
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
    body = sent.json()
    assert body["anthropic_version"] == "bedrock-2023-05-31" and "model" not in body and "stream" not in body


def test_bedrock_event_stream_becomes_anthropic_sse_with_thinking_and_tool_use(gw, bedrock):
    bedrock.enqueue(bedrock_fake.stream_reply(thinking_frames()))
    with sdk(gw).messages.stream(model="clouds/bedrock", max_tokens=200, tools=[WEATHER_TOOL],
                                 thinking={"type": "enabled", "budget_tokens": 1024},
                                 messages=[{"role": "user", "content": "Weather in Paris?"}],
                                 extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"}) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert [block.type for block in final.content] == ["thinking", "tool_use"]
    assert final.content[0].signature == "c2lnbmVk"
    assert final.content[1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.model == "clouds/bedrock"
    assert (final.usage.output_tokens, final.usage.cache_read_input_tokens) == (42, 100)
    sent = bedrock.requests[-1]
    assert sent.path == f"/model/{BEDROCK_MODEL}/invoke-with-response-stream"
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    assert sent.json()["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert bedrock.signed_by == [AWS_KEY[0]]


def test_bedrock_tool_result_turn_goes_to_invoke_model_unchanged(gw, bedrock):
    turns = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_bdrk01", "name": "get_weather",
                                                "input": {"city": "Paris"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_bdrk01",
                                           "content": "18C, sunny"}]}]
    message = sdk(gw).messages.create(model="clouds/bedrock", max_tokens=8, tools=[WEATHER_TOOL], messages=turns)
    assert message.stop_reason == "end_turn"
    body = bedrock.requests[-1].json()
    assert body["messages"] == turns and body["tools"] == [WEATHER_TOOL]


def test_bedrock_throttling_is_a_rate_limit_error(gw, bedrock):
    bedrock.enqueue(bedrock_fake.error_reply(429, "ThrottlingException", "Too many requests, please wait."))
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk(gw).messages.create(model="clouds/bedrock", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert "Too many requests" in caught.value.body["error"]["message"]


def test_bedrock_validation_exception_is_the_clients_invalid_request(gw, bedrock):
    bedrock.enqueue(bedrock_fake.error_reply(400, "ValidationException", "messages: roles must alternate"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="clouds/bedrock", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": "messages: roles must alternate"}


def test_bedrock_exception_frame_before_the_first_event_fails_the_attempt(gw, bedrock):
    bedrock.enqueue(bedrock_fake.stream_reply([bedrock_fake.exception_frame("throttlingException", "Slow down")]))
    with pytest.raises(anthropic.RateLimitError):
        with sdk(gw).messages.stream(model="clouds/bedrock", max_tokens=5,
                                     messages=[{"role": "user", "content": "hi"}]) as stream:
            list(stream)


def test_bedrock_refusing_the_signature_is_a_502_naming_the_provider_and_never_the_secret(gw, bedrock):
    bedrock.keys = {AWS_KEY[0]: ("anotherSecretBBBBBBBBBBBBBBBBBBBBBBBBBBB", None)}
    try:
        response = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
            "model": "clouds/bedrock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    finally:
        bedrock.keys = {AWS_KEY[0]: (AWS_KEY[1], None)}
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "provider bedrock-iam rejected the gateway's credentials"
    assert [error for _, error in bedrock.refused] == ["InvalidSignatureException"]
    assert AWS_KEY[1] not in response.text


# -- Bedrock's Messages path, SigV4 ---------------------------------------------------------------------

def test_bedrock_messages_path_is_anthropics_protocol_signed(gw, bedrock):
    with sdk(gw).messages.stream(model="clouds/bedrock-messages", max_tokens=3,
                                 messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "tok tok tok " and final.model == "clouds/bedrock-messages"
    sent = bedrock.requests[-1]
    assert sent.path == "/anthropic/v1/messages" and sent.json()["model"] == BEDROCK_MODEL
    assert bedrock.signed_by == [AWS_KEY[0]] and "x-api-key" not in sent.headers


# -- Claude on Vertex AI ----------------------------------------------------------------------------------

def test_vertex_raw_predict_with_a_service_account_token(gw, vertex):
    message = sdk(gw).messages.create(model="clouds/vertex", max_tokens=4,
                                      messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "tok " * 4 and message.model == "clouds/vertex"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 4)
    sent = vertex.requests[-1]
    assert sent.path == ("/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models/"
                         "claude-sonnet-4-5@20250929:rawPredict")
    assert sent.headers["authorization"].removeprefix("Bearer ") in vertex.live_tokens()
    assert sent.json()["anthropic_version"] == "vertex-2023-10-16"


def test_vertex_stream_raw_predict_streams_anthropic_events(gw, vertex):
    vertex.enqueue(anthropic_fake.sse_reply(anthropic_fake.stream_events(["Bon", "jour"], output_tokens=2)))
    with sdk(gw).messages.stream(model="clouds/vertex", max_tokens=4,
                                 messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Bonjour" and final.usage.output_tokens == 2
    assert vertex.requests[-1].path.endswith(":streamRawPredict")
    assert vertex.requests[-1].json()["stream"] is True


def test_vertex_quota_error_in_googles_envelope_is_a_rate_limit_error(gw, vertex):
    vertex.enqueue(google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk(gw).messages.create(model="clouds/vertex", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert "Quota exceeded" in caught.value.body["error"]["message"]


def test_vertex_anthropic_error_passes_with_its_type(gw, vertex):
    vertex.enqueue(anthropic_fake.error_reply(400, "invalid_request_error", "max_tokens: must be positive"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="clouds/vertex", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"


def test_vertex_streams_thinking_and_a_tool_call_then_takes_the_tool_result(gw, vertex):
    vertex.enqueue(anthropic_fake.sse_reply(thinking_sse()))
    with sdk(gw).messages.stream(model="clouds/vertex", max_tokens=200, tools=[WEATHER_TOOL],
                                 thinking={"type": "enabled", "budget_tokens": 1024},
                                 messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "tool_use"]
    assert final.content[1].input == {"city": "Paris"} and final.usage.output_tokens == 42
    assert vertex.requests[-1].json()["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    turns = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in final.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_bdrk01",
                                           "content": "18C, sunny"}]}]
    message = sdk(gw).messages.create(model="clouds/vertex", max_tokens=8, tools=[WEATHER_TOOL], messages=turns,
                                      thinking={"type": "enabled", "budget_tokens": 1024})
    assert message.stop_reason == "end_turn"
    sent = vertex.requests[-1].json()["messages"]
    assert sent[1]["content"][0]["signature"] == "c2lnbmVk" and sent[2] == turns[2]


def test_gemini_on_vertex_speaks_the_gemini_protocol_with_the_google_token(gw, vertex):
    with sdk(gw).messages.stream(model="clouds/vertex-gemini", max_tokens=16,
                                 messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "Hello from the Gemini fake."
    sent = vertex.requests[-1]
    assert sent.path == ("/v1/projects/fake-project/locations/us-east5/publishers/google/models/"
                         "gemini-2.5-flash:streamGenerateContent")
    assert sent.query == "alt=sse" and sent.headers["authorization"].removeprefix("Bearer ") in vertex.live_tokens()
    assert "x-goog-api-key" not in sent.headers and "contents" in sent.json()


# -- Azure OpenAI -------------------------------------------------------------------------------------------

def test_azure_v1_path_with_the_api_key_header(gw, azure):
    message = sdk(gw).messages.create(model="clouds/azure-v1", max_tokens=20,
                                      messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].type == "text" and message.model == "clouds/azure-v1"
    sent = azure.requests[-1]
    assert sent.path == "/openai/v1/chat/completions" and sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers and azure.deployments == ["gpt-5-4-prod"]


def test_azure_deployment_path_carries_the_api_version(gw, azure):
    azure.enqueue(chat_stream(StreamScript(text=["Hel", "lo"])))
    with sdk(gw).messages.stream(model="clouds/azure-deployment", max_tokens=20,
                                 messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "Hello"
    sent = azure.requests[-1]
    assert (sent.path, sent.query) == ("/openai/deployments/gpt-5-4-prod/chat/completions", "api-version=2024-10-21")
    assert sent.headers["api-key"] == AZURE_KEY


@pytest.mark.parametrize("model, path", [
    ("clouds/azure-deployment", "/openai/deployments/gpt-5-4-prod/chat/completions"),
    ("clouds/azure-v1", "/openai/v1/chat/completions")])
def test_a_chat_completions_client_passes_through_to_azure_with_its_key(gw, azure, model, path):
    azure.enqueue(chat_stream(StreamScript(text=["Hel", "lo"])))
    messages = b'[{"role": "user",  "content": "hi"}]'
    body = b'{"model": "' + model.encode() + b'", "messages": ' + messages + b', "stream": true, "seed": 3}'
    with httpx.stream("POST", gw.url + "/v1/chat/completions", content=body, timeout=30,
                      headers={"authorization": f"Bearer {TEAM_KEY}", "content-type": "application/json"}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and '"id":"chatcmpl-fake0001"' in lines[0]  # the upstream's own chunks
    sent = azure.requests[-1]
    assert sent.path == path and sent.headers["api-key"] == AZURE_KEY and messages in sent.body
    assert sent.json() == {"model": "gpt-5-4-prod", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                           "seed": 3, "stream_options": {"include_usage": True}}
    assert AZURE_KEY not in "".join(lines)


def test_azure_tool_call_over_two_turns(gw, azure):
    azure.enqueue(chat_stream(StreamScript(tool_calls=[ToolCall(id="call_az1", name="get_weather",
                                                                arguments=['{"city":', ' "Paris"}'])],
                                           finish_reason="tool_calls")))
    with sdk(gw).messages.stream(model="clouds/azure-deployment", max_tokens=50, tools=[WEATHER_TOOL],
                                 messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input == {"city": "Paris"}
    message = sdk(gw).messages.create(model="clouds/azure-deployment", max_tokens=50, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in final.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_az1", "content": "18C"}]}])
    assert message.content[0].type == "text"
    sent = azure.chat_requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"] and sent[2]["tool_call_id"] == "call_az1"


def test_azure_entra_id_token_from_the_client_credentials_grant(gw, azure):
    message = sdk(gw).messages.create(model="clouds/azure-entra", max_tokens=20,
                                      messages=[{"role": "user", "content": "hi"}])
    assert message.model == "clouds/azure-entra"
    sent = azure.requests[-1]
    assert sent.path == "/openai/deployments/gpt-5-4-prod/chat/completions" and "api-key" not in sent.headers
    assert sent.headers["authorization"].removeprefix("Bearer ") in azure.tokens


def test_azure_refusing_the_key_is_a_502_naming_the_provider(gw, azure):
    azure.resource_key = "a-rotated-resource-key-0000000000"
    try:
        with pytest.raises(anthropic.InternalServerError) as caught:
            sdk(gw).messages.create(model="clouds/azure-v1", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    finally:
        azure.resource_key = AZURE_KEY
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["message"] == "provider azure-v1 rejected the gateway's credentials"
