"""SigV4: requests signed by the gateway are accepted by a fake that recomputes the signature from
the wire, credentials come from the settings or the AWS chain, and a rotation of the shared
credentials file is picked up while requests keep flowing."""
from __future__ import annotations

import asyncio
import calendar
import time
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.credentials import CredentialsUnavailable, credentials_from
from gateway.credentials.sigv4 import SigV4Credentials, signed_headers, signing_key
from providers import bedrock
from tests.credentials.conftest import post_with, sent_once
from tests.fakes.aws_sigv4 import verify
from tests.fakes.bedrock import BedrockFake

KEY_A = ("AKIAFAKEKEYAAAAAAAAA", "secretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
KEY_B = ("AKIAFAKEKEYBBBBBBBBB", "secretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
BODY = b'{"model":"anthropic/claude-sonnet-4.5","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}'
MODEL_ID = "anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture(scope="module")
def fake():
    with BedrockFake() as server:
        yield server


@pytest.fixture
def bedrock_fake(fake):
    fake.reset()
    fake.keys = {KEY_A[0]: (KEY_A[1], None)}
    fake.refused.clear()
    fake.signed_by.clear()
    return fake


@pytest.fixture
def aws_env(tmp_path, monkeypatch):
    """An AWS environment with nothing but the files this test writes."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return tmp_path


def write_profile(path, profile: str, key: tuple[str, str]) -> None:
    path.write_text(f"[{profile}]\naws_access_key_id = {key[0]}\naws_secret_access_key = {key[1]}\n")


async def invoke(client: httpx.AsyncClient, creds, fake: BedrockFake, body: bytes = BODY,
                 stream: bool = False) -> httpx.Response:
    url = fake.url + bedrock.invoke_path(MODEL_ID, stream=stream)
    return await post_with(client, creds, url, bedrock.invoke_headers(stream=stream), bedrock.invoke_body(body))


def run(coro):
    return asyncio.run(coro)


def invoked_with(fake: BedrockFake, *, region: str = "us-east-1", secret: str = KEY_A[1],
                 **options) -> httpx.Response:
    """Bedrock's answer to one request signed with KEY_A's id, `secret` and `region`."""
    creds = SigV4Credentials("bedrock", region=region, access_key_id=KEY_A[0], secret_access_key=secret, **options)
    return run(sent_once(creds, lambda client: invoke(client, creds, fake)))


def test_request_signed_with_configured_keys_is_accepted_by_bedrock(bedrock_fake):
    creds = credentials_from("bedrock", {"protocol": "bedrock", "auth": "sigv4", "region": "us-east-1",
                                         "aws_access_key_id": KEY_A[0], "aws_secret_access_key": KEY_A[1]})
    response = run(sent_once(creds, lambda client: invoke(client, creds, bedrock_fake)))
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    assert bedrock_fake.signed_by == [KEY_A[0]]
    sent = bedrock_fake.requests[0]
    assert sent.path == f"/model/{MODEL_ID}/invoke"
    assert "model" not in sent.json() and sent.json()["anthropic_version"] == "bedrock-2023-05-31"


def test_wrong_secret_is_refused_as_aws_refuses_it_and_maps_to_our_credentials_fault(bedrock_fake):
    response = invoked_with(bedrock_fake, secret="not-the-secret-at-all-0000000000000000000")
    assert response.status_code == 403
    assert response.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    assert "signature we calculated does not match" in response.json()["message"]
    status, error_type, _ = bedrock.map_error(response.status_code, response.headers, response.content)
    assert (status, error_type) == (403, "authentication_error")
    assert bedrock.is_credentials_error(response.headers)


def test_body_changed_after_signing_is_refused(bedrock_fake):
    async def scenario():
        creds = SigV4Credentials("bedrock", region="us-east-1", access_key_id=KEY_A[0],
                                 secret_access_key=KEY_A[1])
        await creds.start()
        url = bedrock_fake.url + bedrock.invoke_path(MODEL_ID, stream=False)
        payload = bedrock.invoke_body(BODY)
        headers = {**bedrock.invoke_headers(stream=False)}
        headers.update(creds.headers_for("POST", url, headers, payload))
        async with httpx.AsyncClient() as client:
            return await client.post(url, content=payload.replace(b'"hi"', b'"ho"'), headers=headers)

    assert run(scenario()).status_code == 403
    assert bedrock_fake.refused[-1][1] == "InvalidSignatureException"


def test_session_token_is_signed_and_required(bedrock_fake):
    bedrock_fake.keys = {KEY_A[0]: (KEY_A[1], "session-token-abc123")}
    assert invoked_with(bedrock_fake, session_token="session-token-abc123").status_code == 200
    refused = invoked_with(bedrock_fake, session_token=None)
    assert refused.status_code == 403
    assert refused.headers["x-amzn-errortype"].startswith("UnrecognizedClientException")


def test_signature_region_must_match_the_endpoint(bedrock_fake):
    response = invoked_with(bedrock_fake, region="eu-west-1")
    assert response.status_code == 403 and "region" in response.json()["message"]


@pytest.mark.parametrize("url", [
    "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
    "https://bedrock-runtime.us-west-2.amazonaws.com:443/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123%3A"
    "inference-profile%2Fus.anthropic.claude-haiku-4-5/invoke-with-response-stream",
    "http://127.0.0.1:8123/anthropic/v1/messages?beta=true&a=1",
])
def test_signature_is_the_one_botocore_computes_for_the_same_request_and_instant(url):
    headers = {"content-type": "application/json", "accept": "application/vnd.amazon.eventstream",
               "anthropic-version": "  2023-06-01 "}
    region = "us-west-2" if "us-west-2" in url else "us-east-1"
    reference = AWSRequest("POST", url, data=BODY, headers=dict(headers))
    SigV4Auth(BotoCredentials(*KEY_A, "tok"), "bedrock", region).add_auth(reference)
    amz_date = reference.headers["X-Amz-Date"]
    ours = signed_headers("POST", url, headers, BODY, access_key=KEY_A[0],
                          key=signing_key(KEY_A[1], amz_date[:8], region, "bedrock"), token="tok",
                          region=region, service="bedrock", amz_date=amz_date)
    assert ours["authorization"] == reference.headers["Authorization"]
    assert ours["x-amz-security-token"] == "tok"


def test_signing_uses_the_clock_of_each_request(bedrock_fake):
    now = [calendar.timegm(time.gmtime())]
    creds = SigV4Credentials("bedrock", region="us-east-1", access_key_id=KEY_A[0], secret_access_key=KEY_A[1],
                             clock=lambda: now[0])
    run(creds.start())
    first = creds.headers_for("POST", "https://h/model/m/invoke", {}, b"{}")
    now[0] += 86400  # the next day: a new signing key
    second = creds.headers_for("POST", "https://h/model/m/invoke", {}, b"{}")
    assert first["x-amz-date"][:8] != second["x-amz-date"][:8]
    assert first["authorization"] != second["authorization"]


def test_profile_from_shared_credentials_file(aws_env, bedrock_fake):
    write_profile(aws_env / "credentials", "team", KEY_A)

    creds = credentials_from("bedrock", {"auth": "sigv4", "aws_profile": "team",
                                         "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com"})
    response = run(sent_once(creds, lambda client: invoke(client, creds, bedrock_fake)))
    assert response.status_code == 200
    assert creds.region == "us-east-1" and creds.method == "shared-credentials-file"


def test_rotation_in_shared_credentials_file_is_picked_up_without_restart_or_failed_request(aws_env, bedrock_fake):
    credentials_file = aws_env / "credentials"
    write_profile(credentials_file, "default", KEY_A)
    bedrock_fake.keys[KEY_B[0]] = (KEY_B[1], None)  # AWS's rotation: the new key is active before the old goes

    async def scenario():
        creds = SigV4Credentials("bedrock", region="us-east-1", check_interval=0.05)
        await creds.start()
        statuses = []
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                statuses.append((await invoke(client, creds, bedrock_fake)).status_code)
            write_profile(credentials_file, "default", KEY_B)
            deadline = time.monotonic() + 3
            while creds.access_key_id != KEY_B[0] and time.monotonic() < deadline:
                statuses.append((await invoke(client, creds, bedrock_fake)).status_code)
                await asyncio.sleep(0.01)
            del bedrock_fake.keys[KEY_A[0]]  # the old key is deactivated
            for _ in range(3):
                statuses.append((await invoke(client, creds, bedrock_fake)).status_code)
        await creds.close()
        return statuses

    statuses = run(scenario())
    assert set(statuses) == {200}
    assert bedrock_fake.signed_by[0] == KEY_A[0] and bedrock_fake.signed_by[-3:] == [KEY_B[0]] * 3
    assert not bedrock_fake.refused


def test_no_credentials_anywhere_names_provider_and_source_and_retries(aws_env):
    async def scenario():
        creds = SigV4Credentials("bedrock-east", region="us-east-1", check_interval=0.05)
        await creds.start()
        with pytest.raises(CredentialsUnavailable) as caught:
            creds.headers_for("POST", "https://h/model/m/invoke", {}, b"{}")
        write_profile(aws_env / "credentials", "default", KEY_A)
        deadline = time.monotonic() + 4
        while creds.access_key_id is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        headers = creds.headers_for("POST", "https://h/model/m/invoke", {}, b"{}")
        await creds.close()
        return str(caught.value), headers

    message, headers = run(scenario())
    assert "provider bedrock-east" in message and "standard AWS credential chain" in message
    assert "no AWS credentials found" in message
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_A[0]}/")


def test_unknown_profile_names_the_profile(aws_env):
    creds = SigV4Credentials("bedrock", region="us-east-1", profile="nope")
    run(creds.start())
    with pytest.raises(CredentialsUnavailable, match="AWS profile 'nope'"):
        creds.headers_for("POST", "https://h/x", {}, b"")


def test_temporary_credentials_from_container_metadata_are_renewed_in_the_background(aws_env, bedrock_fake,
                                                                                     monkeypatch):
    """The chain's refreshable kind (container metadata, as on ECS or EKS): botocore renews them when
    they near expiry, called from the background task; requests keep being signed meanwhile."""
    import datetime
    import json

    from tests.fakes.base import Reply, ScriptedServer

    issued = [("ASIAFAKETEMPORARY001", "tempsecret1" * 4, "temptoken1")]

    class Metadata(ScriptedServer):
        def auto_reply(self, request):
            key, secret, token = issued[-1]
            # Eleven minutes left: inside botocore's advisory refresh window, so each check renews.
            expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=11)
            return Reply(chunks=[json.dumps({"AccessKeyId": key, "SecretAccessKey": secret, "Token": token,
                                             "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()])

    with Metadata() as metadata:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", metadata.url + "/v2/credentials")
        bedrock_fake.keys = {issued[0][0]: (issued[0][1], issued[0][2])}

        async def scenario():
            creds = SigV4Credentials("bedrock", region="us-east-1", check_interval=0.05)
            await creds.start()
            statuses = []
            async with httpx.AsyncClient() as client:
                statuses.append((await invoke(client, creds, bedrock_fake)).status_code)
                issued.append(("ASIAFAKETEMPORARY002", "tempsecret2" * 4, "temptoken2"))
                bedrock_fake.keys[issued[1][0]] = (issued[1][1], issued[1][2])
                deadline = time.monotonic() + 3
                while creds.access_key_id != issued[1][0] and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                del bedrock_fake.keys[issued[0][0]]
                statuses.append((await invoke(client, creds, bedrock_fake)).status_code)
            await creds.close()
            return creds, statuses

        creds, statuses = run(scenario())
    assert statuses == [200, 200]
    assert creds.method == "container-role"
    assert bedrock_fake.signed_by == [issued[0][0], issued[1][0]]


def test_a_signature_from_a_clock_ten_minutes_off_is_refused(bedrock_fake):
    response = invoked_with(bedrock_fake, clock=lambda: time.time() - 600)
    assert response.status_code == 403 and response.json()["message"].startswith("Signature expired")


_HEADER_NAME = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True).filter(
    lambda n: n not in {"host", "x-amz-date", "x-amz-security-token", "authorization", "user-agent", "expect",
                        "transfer-encoding", "x-amzn-trace-id"})
_HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(
    lambda v: v.strip() or "v")
_SEGMENT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@example(headers={}, model=".", body=b"", stream=False, token=None)
@example(headers={}, model="..", body=b"{}", stream=True, token=None)
@given(headers=st.dictionaries(_HEADER_NAME, _HEADER_VALUE, max_size=6), model=_SEGMENT,
       body=st.binary(max_size=300), stream=st.booleans(), token=st.none() | st.just("FwoGZXIvYXdzE"))
def test_signature_matches_botocore_for_any_headers_model_id_and_body(headers, model, body, stream, token):
    url = "https://bedrock-runtime.us-east-1.amazonaws.com" + bedrock.invoke_path(model, stream=stream)
    reference = AWSRequest("POST", url, data=body, headers=dict(headers))
    SigV4Auth(BotoCredentials(*KEY_A, token), "bedrock", "us-east-1").add_auth(reference)
    amz_date = reference.headers["X-Amz-Date"]
    ours = signed_headers("POST", url, headers, body, access_key=KEY_A[0],
                          key=signing_key(KEY_A[1], amz_date[:8], "us-east-1", "bedrock"), token=token,
                          region="us-east-1", service="bedrock", amz_date=amz_date)
    assert ours["authorization"] == reference.headers["Authorization"]
    # The fake's verification, written from AWS's documentation, accepts it too.
    sent = {name.lower(): value for name, value in {**headers, **ours}.items()}
    sent["host"] = "bedrock-runtime.us-east-1.amazonaws.com"
    signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    assert verify("POST", urlsplit(url).path, "", sent, body, keys={KEY_A[0]: (KEY_A[1], token)},
                  region="us-east-1", service="bedrock", now=signed_at) is None
