"""One router model served by Anthropic, Bedrock and Vertex through `gateway serve`, as issue 21's
acceptance puts it: the official SDK's stream falls over from Anthropic to Bedrock (SigV4 from the
shared credentials file, InvokeModelWithResponseStream) and on to Vertex; a rotated AWS key and an
expiring Vertex token are picked up without a restart or a failed request; a failed token refresh
is a 502 naming the provider and the credential source; no credential shows anywhere."""
from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest
import yaml

from tests.conftest import ADMIN_KEY, TEAM_KEY
from tests.fakes import anthropic as anthropic_fake
from tests.fakes import bedrock as bedrock_fake
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import wait_for
from tests.fakes.bedrock import BedrockFake
from tests.fakes.vertex import VertexFake, google_error
from tests.served_process import ServedProcess

MODEL = "anthropic/claude-sonnet-4.6"
ANTHROPIC_KEY = "sk-ant-upstream-secret-clouds-0001"
KEY_A = ("AKIAFAKEROTATEAAAAAA", "rotationSecretAAAAAAAAAAAAAAAAAAAAAAAAAA")
KEY_B = ("AKIAFAKEROTATEBBBBBB", "rotationSecretBBBBBBBBBBBBBBBBBBBBBBBBBB")
TOKEN_LIFETIME = 4  # seconds: the gateway refreshes half-way through
ORDER = {"provider": {"order": ["anthropic", "amazon-bedrock", "google-vertex"]}}
VERTEX_PRICING = {"input": 3.3, "output": 16.5}  # a regional endpoint: 10 % over the global price
PROMPT = [{"role": "user", "content": "hi"}]


def write_aws_credentials(path, key: tuple[str, str]) -> None:
    path.write_text(f"[default]\naws_access_key_id = {key[0]}\naws_secret_access_key = {key[1]}\n")


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    with AnthropicFake() as upstream, BedrockFake(keys={KEY_A[0]: (KEY_A[1], None)}) as bedrock, \
            VertexFake(token_lifetime=TOKEN_LIFETIME) as vertex:
        yield upstream, bedrock, vertex


@pytest.fixture(scope="module")
def served(fakes, tmp_path_factory):
    upstream, bedrock, vertex = fakes
    folder = tmp_path_factory.mktemp("clouds")
    write_aws_credentials(folder / "aws-credentials", KEY_A)
    (folder / "aws-config").write_text("")
    key_file = vertex.write_service_account(folder / "vertex-sa.json")
    config = {
        "admin_key": ADMIN_KEY,
        "keys": [{"key": TEAM_KEY, "team": "team-a"}],
        "retries": {"per_endpoint": 1},
        "providers": {
            "anthropic": {"base_url": upstream.url, "api_key": ANTHROPIC_KEY},
            # The built-in cloud providers, pointed at the fakes: their protocol and auth come from
            # the catalog (bedrock with SigV4 from the AWS chain, vertex with Google credentials).
            "amazon-bedrock": {"base_url": bedrock.url, "region": "us-east-1"},
            "google-vertex": {"base_url": vertex.url, "credentials_file": str(key_file), "region": "us-east5"},
        },
        "models": [{"id": MODEL, "endpoints": [{"provider": "google-vertex", "pricing": VERTEX_PRICING}]}],
    }
    (folder / "gateway.yaml").write_text(yaml.safe_dump(config))
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(folder / "aws-credentials"), "AWS_CONFIG_FILE": str(folder / "aws-config"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    with pytest.MonkeyPatch.context() as patch:
        # The AWS chain of the gateway sees nothing but the files written here.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                     "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            patch.delenv(name, raising=False)
        process = ServedProcess(["--config", str(folder / "gateway.yaml")], env=env)
    with process:
        process.folder = folder
        yield process


@pytest.fixture
def clouds(fakes):
    upstream, bedrock, vertex = fakes
    for fake in fakes:
        fake.reset()
        fake.default = None
    bedrock.keys = {KEY_A[0]: (KEY_A[1], None)}
    bedrock.signed_by.clear()
    bedrock.refused.clear()
    vertex.refuse_grants = False
    return fakes


def sdk(served) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key=TEAM_KEY, max_retries=0)


def streamed(served, **extra) -> tuple[str, anthropic.types.Message, httpx.Headers]:
    with sdk(served).messages.stream(model=MODEL, max_tokens=6, messages=PROMPT, extra_body=ORDER,
                                     **extra) as stream:
        text = "".join(stream.text_stream)
        return text, stream.get_final_message(), stream.response.headers


def usage_by_provider(served) -> dict[str, dict]:
    answer = httpx.get(served.url + "/admin/usage", params={"group_by": "provider"},
                       headers={"x-api-key": ADMIN_KEY}).json()
    return {row["provider"]: row for row in answer["data"]}


def test_anthropic_overloaded_stream_is_served_by_bedrock_through_the_event_stream(served, clouds):
    upstream, bedrock, _ = clouds
    upstream.default = anthropic_fake.error_reply(529, "overloaded_error", "Overloaded")
    text, final, headers = streamed(served)
    assert text == "tok " * 6
    assert final.model == MODEL and final.model_extra["provider"] == "amazon-bedrock"
    assert headers["x-gateway-provider"] == "amazon-bedrock"
    assert headers["x-gateway-attempts"] == f"anthropic/{MODEL}=529,amazon-bedrock/{MODEL}=ok"
    sent = bedrock.requests[-1]
    assert sent.path == "/model/global.anthropic.claude-sonnet-4-6/invoke-with-response-stream"
    assert bedrock.signed_by == [KEY_A[0]] and not bedrock.refused


def test_with_bedrock_failing_too_vertex_serves_and_usage_records_each_cloud_at_its_price(served, clouds):
    upstream, bedrock, vertex = clouds
    upstream.default = anthropic_fake.error_reply(529, "overloaded_error", "Overloaded")
    bedrock.default = bedrock_fake.error_reply(503, "ServiceUnavailableException", "Service is unavailable")
    before = usage_by_provider(served).get("google-vertex", {"requests": 0, "cost_usd": 0.0})
    text, final, headers = streamed(served)
    assert text == "tok " * 6 and final.model_extra["provider"] == "google-vertex"
    assert headers["x-gateway-attempts"] == (f"anthropic/{MODEL}=529,amazon-bedrock/{MODEL}=529,"
                                             f"google-vertex/{MODEL}=ok")
    assert vertex.requests[-1].path.endswith("/models/claude-sonnet-4-6:streamRawPredict")
    cost = (10 * VERTEX_PRICING["input"] + 6 * VERTEX_PRICING["output"]) / 1e6
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 6)

    def recorded():
        row = usage_by_provider(served).get("google-vertex")
        return row is not None and row["requests"] == before["requests"] + 1
    assert wait_for(recorded, timeout=10)
    assert usage_by_provider(served)["google-vertex"]["cost_usd"] == pytest.approx(before["cost_usd"] + cost)
    assert "amazon-bedrock" in usage_by_provider(served)  # the first test's request


def test_a_rotated_aws_key_is_picked_up_without_a_restart_or_a_failed_request(served, clouds):
    _, bedrock, _ = clouds
    only_bedrock = {"provider": {"only": ["amazon-bedrock"]}}
    bedrock.keys = {KEY_A[0]: (KEY_A[1], None), KEY_B[0]: (KEY_B[1], None)}  # both valid while rotating
    write_aws_credentials(served.folder / "aws-credentials", KEY_B)
    statuses = []
    deadline = time.monotonic() + 10
    while (not bedrock.signed_by or bedrock.signed_by[-1] != KEY_B[0]) and time.monotonic() < deadline:
        statuses.append(httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
            "model": MODEL, "max_tokens": 2, "messages": PROMPT, **only_bedrock}).status_code)
        time.sleep(0.1)
    assert bedrock.signed_by[-1] == KEY_B[0] and set(statuses) == {200}
    bedrock.keys = {KEY_B[0]: (KEY_B[1], None)}  # the old key deactivated
    message = sdk(served).messages.create(model=MODEL, max_tokens=2, messages=PROMPT, extra_body=only_bedrock)
    assert message.model_extra["provider"] == "amazon-bedrock" and not bedrock.refused


def test_a_reload_that_changes_a_providers_credentials_serves_the_new_ones(served, clouds):
    _, bedrock, _ = clouds
    config = yaml.safe_load((served.folder / "gateway.yaml").read_text())
    config["providers"]["amazon-bedrock"].update(aws_access_key_id=KEY_A[0], aws_secret_access_key=KEY_A[1])
    (served.folder / "gateway.yaml").write_text(yaml.safe_dump(config))
    answer = httpx.post(served.url + "/admin/reload", headers={"x-api-key": ADMIN_KEY})
    assert answer.status_code == 200, answer.text
    message = sdk(served).messages.create(model=MODEL, max_tokens=2, messages=PROMPT,
                                          extra_body={"provider": {"only": ["amazon-bedrock"]}})
    # The shared credentials file still holds KEY_B: the keys in the config file sign now.
    assert message.model_extra["provider"] == "amazon-bedrock" and bedrock.signed_by == [KEY_A[0]]


def test_an_expiring_vertex_token_is_refreshed_before_it_lapses(served, clouds):
    _, _, vertex = clouds
    only_vertex = {"provider": {"only": ["google-vertex"]}}
    issued = len(vertex.tokens)
    statuses = []
    end = time.monotonic() + 2.5 * TOKEN_LIFETIME
    while time.monotonic() < end:
        statuses.append(httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
            "model": MODEL, "max_tokens": 2, "messages": PROMPT, **only_vertex}).status_code)
        time.sleep(0.1)
    assert set(statuses) == {200}
    assert len(vertex.tokens) >= issued + 2  # refreshed at least twice while requests kept flowing


def test_no_credential_appears_in_responses_logs_metrics_or_usage(served, clouds):
    upstream, bedrock, vertex = clouds
    # Upstreams that quote the credentials back in their errors.
    upstream.enqueue(anthropic_fake.error_reply(401, "authentication_error", f"invalid x-api-key {ANTHROPIC_KEY}"))
    bedrock.enqueue(bedrock_fake.error_reply(400, "ValidationException", "bad request"))
    seen = []
    response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
        "model": MODEL, "max_tokens": 2, "messages": PROMPT, **ORDER})
    seen.append(response.text + json.dumps(dict(response.headers)))
    for _ in range(3):
        # The error quotes the newest token; the gateway may refresh between the two (tokens here
        # live seconds), and it can redact only what it presented: go again until they match.
        token = vertex.live_tokens()[-1]
        vertex.enqueue(google_error(400, "INVALID_ARGUMENT", f"request with token {token} is malformed"))
        response = httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json={
            "model": MODEL, "max_tokens": 2, "messages": PROMPT, "provider": {"only": ["google-vertex"]}})
        if vertex.requests[-1].headers.get("authorization") == f"Bearer {token}":
            break
    assert response.status_code == 400 and "[redacted]" in response.json()["error"]["message"]
    seen.append(response.text + json.dumps(dict(response.headers)))
    _, _, headers = streamed(served)
    seen.append(json.dumps(dict(headers)))
    seen.append(httpx.get(served.url + "/metrics").text)
    seen.append(json.dumps(usage_by_provider(served)))
    seen.append(httpx.get(served.url + "/admin/requests", headers={"x-api-key": ADMIN_KEY}).text)
    seen.append(served.output)
    private_key = vertex.service_account_info()["private_key"]
    secrets = [ANTHROPIC_KEY, KEY_A[1], KEY_B[1], *vertex.tokens, private_key.splitlines()[1]]
    everything = "\n".join(seen)
    for secret in secrets:
        assert secret not in everything


def test_a_failed_token_refresh_is_a_502_naming_the_provider_and_the_credential_source(served, clouds):
    _, _, vertex = clouds
    only_vertex = {"model": MODEL, "max_tokens": 2, "messages": PROMPT, "provider": {"only": ["google-vertex"]}}
    vertex.refuse_grants = True  # a revoked key: refreshes fail, and the token held lapses at its expiry
    answers = []

    def without_token() -> bool:
        answers.append(httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY}, json=only_vertex))
        return answers[-1].status_code != 200
    assert wait_for(without_token, timeout=2 * TOKEN_LIFETIME, interval=0.2)
    response = answers[-1]
    error = response.json()["error"]
    assert (response.status_code, error["type"]) == (502, "api_error")
    assert error["message"].startswith(f"provider google-vertex: no usable credentials from the service account "
                                       f"file {served.folder / 'vertex-sa.json'}: ")
    assert "invalid_grant" in error["message"]
    assert response.headers["x-gateway-attempts"] == f"google-vertex/{MODEL}=credentials"
    vertex.refuse_grants = False  # the background refresh keeps trying and recovers
    assert wait_for(lambda: httpx.post(served.url + "/v1/messages", headers={"x-api-key": TEAM_KEY},
                                       json=only_vertex).status_code == 200, timeout=20, interval=0.5)
