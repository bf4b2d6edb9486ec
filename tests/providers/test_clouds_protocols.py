"""The clouds' protocol modules as the executor sees them: what `bedrock`, `vertex` and `azure`
build for one attempt, and how Bedrock's errors become the outcomes the retry policy knows."""
from __future__ import annotations

import msgspec
import orjson
import pytest

from policies.catalog import load_catalog
from policies.plan import Attempt
from policies.retry import NEXT_ENDPOINT, NEXT_MODEL, RETRY, STOP, next_step
from providers import protocol
from tests.fakes import bedrock as bedrock_fake

CATALOG = load_catalog(provider_overrides={
    "google-vertex": {"project": "acme-prod", "region": "europe-west1"},
    "azure": {"protocol": "azure", "base_url": "https://contoso.openai.azure.com", "api_version": "2024-10-21"}})
BODY = b'{"model":"anthropic/claude-sonnet-4.6","max_tokens":8,"stream":true,"provider":{"only":["x"]},' \
       b'"messages":[{"role":"user","content":"hi"}]}'


class Request:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.model, self.stream = raw, "anthropic/claude-sonnet-4.6", b'"stream":true' in raw
        self.router_fields, self.values = ("provider",), None
        self.shape_problem = None  # the bodies here are of the API's shape

    @property
    def body(self) -> dict:
        return orjson.loads(self.raw)


def call_for(model_id: str, provider: str, raw: bytes = BODY, *, beta: str | None = None) -> protocol.Call:
    model = CATALOG.models[model_id]
    endpoint = model.endpoint(provider)
    info = CATALOG.provider(provider)
    attempt = Attempt(model, endpoint, info, endpoint.upstream_model)
    wire = protocol.protocol_for(info.protocol)
    return protocol.Call(Request(raw), model.id, endpoint.upstream_model, info.name, info.base_url, None,
                         wire.options(attempt, False), "msg_test", lambda usage: 0.0, {}, "2023-06-01", beta)


def test_bedrock_builds_invoke_model_with_the_event_stream_as_its_stream_type():
    call = call_for("anthropic/claude-sonnet-4.6", "amazon-bedrock", beta="context-1m-2025-08-07")
    upstream = protocol.protocol_for("bedrock").request(call)
    assert upstream.url == ("https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                            "global.anthropic.claude-sonnet-4-6/invoke-with-response-stream")
    assert upstream.stream_type == "application/vnd.amazon.eventstream"
    body = msgspec.json.decode(upstream.body)
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["anthropic_beta"] == ["context-1m-2025-08-07"]
    assert not {"model", "stream", "provider"} & set(body)
    assert "x-api-key" not in upstream.headers and "authorization" not in upstream.headers  # the executor's


def test_bedrock_refuses_a_body_that_is_not_an_object():
    with pytest.raises(protocol.Refused) as caught:
        protocol.protocol_for("bedrock").request(call_for("anthropic/claude-sonnet-4.6", "amazon-bedrock", b"[1]"))
    assert (caught.value.failure.status, caught.value.failure.error_type) == (400, "invalid_request_error")


@pytest.mark.parametrize("status, name, client, error_type, step", [
    (429, "ThrottlingException", 429, "rate_limit_error", RETRY),
    (429, "ModelNotReadyException", 529, "overloaded_error", RETRY),
    (503, "ServiceUnavailableException", 529, "overloaded_error", RETRY),
    (400, "ServiceQuotaExceededException", 429, "rate_limit_error", RETRY),
    (408, "ModelTimeoutException", 504, "timeout_error", RETRY),
    (424, "ModelErrorException", 502, "api_error", RETRY),
    (403, "AccessDeniedException", 502, "api_error", NEXT_ENDPOINT),
    (403, "UnrecognizedClientException", 502, "api_error", NEXT_ENDPOINT),
    (404, "ResourceNotFoundException", 404, "not_found_error", STOP),
    (400, "ValidationException", 400, "invalid_request_error", STOP),
])
def test_bedrock_errors_map_to_anthropic_types_and_retry_outcomes(status, name, client, error_type, step):
    reply = bedrock_fake.error_reply(status, name, "the service says so")
    failure = protocol.protocol_for("bedrock").failure(call_for("anthropic/claude-sonnet-4.6", "amazon-bedrock"),
                                                       status, reply.headers, reply.chunks[0])
    assert (failure.status, failure.error_type) == (client, error_type)
    assert next_step(failure.outcome) == step


def test_bedrock_prompt_too_long_lets_the_next_model_try():
    reply = bedrock_fake.error_reply(400, "ValidationException", "Input is too long for requested model.")
    failure = protocol.protocol_for("bedrock").failure(call_for("anthropic/claude-sonnet-4.6", "amazon-bedrock"),
                                                       400, reply.headers, reply.chunks[0])
    assert next_step(failure.outcome) == NEXT_MODEL


def test_bedrock_stream_decodes_frames_split_anywhere_and_reads_usage():
    call = call_for("anthropic/claude-sonnet-4.6", "amazon-bedrock")
    stream = protocol.protocol_for("bedrock").stream(call)
    wire = b"".join(bedrock_fake.stream_frames(["Hel", "lo"], input_tokens=7, output_tokens=2))
    out = b"".join(stream.feed(wire[i:i + 5]) for i in range(0, len(wire), 5)) + stream.finish()
    assert out.startswith(b"event: message_start\n") and b'"provider":"amazon-bedrock"' in out
    assert b'"text":"Hel"' in out and out.rstrip().split(b"\n\n")[-1].startswith(b"event: message_stop\n")
    assert stream.started and stream.finished and stream.failure is None
    usage = stream.close_usage()
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (7, 2, False)


def test_vertex_claude_goes_to_the_regional_host_with_the_project_in_the_path():
    upstream = protocol.protocol_for("vertex").request(call_for("anthropic/claude-sonnet-4.6", "google-vertex",
                                                                beta="context-1m-2025-08-07"))
    assert upstream.url == ("https://europe-west1-aiplatform.googleapis.com/v1/projects/acme-prod/locations/"
                            "europe-west1/publishers/anthropic/models/claude-sonnet-4-6:streamRawPredict")
    body = msgspec.json.decode(upstream.body)
    assert body["anthropic_version"] == "vertex-2023-10-16" and body["stream"] is True and "model" not in body
    assert upstream.headers["anthropic-beta"] == "context-1m-2025-08-07"


def test_vertex_gemini_endpoints_go_to_the_gemini_protocol_on_vertex_urls():
    call = call_for("google/gemini-3.5-flash", "google-vertex")
    assert call.options.gemini
    vertex = protocol.protocol_for("vertex")
    if "gemini" not in protocol.NAMES:
        # Without a gemini protocol module the endpoint cannot serve: the next one is tried.
        with pytest.raises(protocol.Refused) as caught:
            vertex.request(call)
        assert next_step(caught.value.failure.outcome) == NEXT_ENDPOINT
        return
    upstream = vertex.request(call)
    assert upstream.url == ("https://europe-west1-aiplatform.googleapis.com/v1/projects/acme-prod/locations/"
                            "europe-west1/publishers/google/models/gemini-3.5-flash:streamGenerateContent?alt=sse")
    assert "contents" in msgspec.json.decode(upstream.body) and "x-goog-api-key" not in upstream.headers


def test_azure_deployment_path_names_the_deployment_and_the_api_version():
    call = call_for("openai/gpt-5.4", "azure", b'{"model":"openai/gpt-5.4","max_tokens":8,'
                                               b'"messages":[{"role":"user","content":"hi"}]}')
    upstream = protocol.protocol_for("azure").request(call)
    assert upstream.url == ("https://contoso.openai.azure.com/openai/deployments/gpt-5.4/chat/completions"
                            "?api-version=2024-10-21")
    body = msgspec.json.decode(upstream.body)
    assert body["max_completion_tokens"] == 8 and "authorization" not in upstream.headers


def test_a_call_redacts_the_credentials_the_executor_added():
    call = call_for("anthropic/claude-sonnet-4.6", "google-vertex")
    call.credentials = ("ya29.a-token-value-0001",)
    failure = protocol.protocol_for("vertex").failure(
        call, 400, {}, b'{"error":{"code":400,"message":"token ya29.a-token-value-0001 is bad",'
                       b'"status":"INVALID_ARGUMENT"}}')
    assert "ya29.a-token-value-0001" not in failure.message and "[redacted]" in failure.message
