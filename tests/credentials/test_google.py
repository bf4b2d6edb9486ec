"""Google tokens: from a service-account file whose token_uri is a fake that verifies the JWT
assertion, refreshed before they expire while requests keep flowing, and a failed refresh that
says which provider and which source, never the key."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.credentials import CredentialsUnavailable, credentials_from
from providers import vertex
from tests.credentials.conftest import post_with, refusal, statuses_for
from tests.fakes.vertex import VertexFake

BODY = b'{"model":"anthropic/claude-sonnet-4.5","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture(scope="module")
def server():
    with VertexFake() as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    server.tokens.clear()
    server.grant_errors.clear()
    server.grant_key_ids.clear()
    server.refuse_grants = False
    server.token_lifetime = 3600
    return server


async def predict(client, creds, fake, *, stream=False) -> httpx.Response:
    url = vertex.claude_url(creds.project, "us-east5", "claude-sonnet-4-5@20250929", stream=stream,
                            base_url=fake.url)
    body = vertex.claude_body(BODY.replace(b'"max_tokens"', b'"stream":true,"max_tokens"') if stream else BODY)
    return await post_with(client, creds, url, vertex.claude_headers(beta=None), body)


def test_service_account_token_is_accepted_by_vertex(fake, tmp_path):
    path = fake.write_service_account(tmp_path / "sa.json")

    async def scenario():
        creds = credentials_from("vertex", {"protocol": "vertex", "credentials_file": str(path),
                                            "region": "us-east5"})
        await creds.start()
        async with httpx.AsyncClient() as client:
            plain = await predict(client, creds, fake)
            streamed = await predict(client, creds, fake, stream=True)
        await creds.close()
        return creds, plain, streamed

    creds, plain, streamed = asyncio.run(scenario())
    assert plain.status_code == 200, plain.text
    assert plain.json()["type"] == "message"
    assert streamed.status_code == 200 and b"event: message_stop" in streamed.content
    assert creds.project == "fake-project"  # from the key file
    assert fake.requests[1].path == ("/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models/"
                                     "claude-sonnet-4-5@20250929:rawPredict")


def test_token_is_refreshed_before_it_expires_and_no_request_fails(fake, tmp_path):
    fake.token_lifetime = 2
    path = fake.write_service_account(tmp_path / "sa.json")

    async def scenario():
        creds = credentials_from("vertex", {"auth": "google", "credentials_file": str(path)})
        await creds.start()
        statuses = await statuses_for(2.6, lambda client: predict(client, creds, fake))
        await creds.close()
        return creds, statuses

    creds, statuses = asyncio.run(scenario())
    assert set(statuses) == {200}
    assert len(fake.tokens) >= 3 and creds.refreshes >= 3  # every token was replaced before it expired


def test_failed_refresh_keeps_the_valid_token_then_names_provider_and_source(fake, tmp_path):
    fake.token_lifetime = 2
    path = fake.write_service_account(tmp_path / "sa.json")
    private_key = fake.service_account_info()["private_key"]

    async def scenario():
        creds = credentials_from("vertex-eu", {"auth": "google", "credentials_file": str(path)})
        await creds.start()
        fake.refuse_grants = True
        still_valid = creds.headers_for("POST", "https://x", {}, b"")
        await asyncio.sleep(2.2)
        with pytest.raises(CredentialsUnavailable) as caught:
            creds.headers_for("POST", "https://x", {}, b"")
        fake.refuse_grants = False
        deadline = time.monotonic() + 3
        recovered = None
        while recovered is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            try:
                recovered = creds.headers_for("POST", "https://x", {}, b"")
            except CredentialsUnavailable:
                pass
        await creds.close()
        return still_valid, caught.value, recovered

    still_valid, error, recovered = asyncio.run(scenario())
    assert still_valid["authorization"].startswith("Bearer ya29.fake-")
    message = str(error)
    assert message.startswith("provider vertex-eu: no usable credentials from the service account file")
    assert str(path) in message and "invalid_grant" in message
    assert private_key not in message and "PRIVATE KEY" not in message and "ya29." not in message
    assert recovered is not None and recovered != still_valid


def test_key_the_token_endpoint_does_not_know_is_refused_with_its_reason(fake, tmp_path):
    info = fake.service_account_info()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
    path = tmp_path / "stolen.json"
    path.write_text(json.dumps(info))

    message = asyncio.run(refusal(credentials_from("vertex", {"auth": "google", "credentials_file": str(path)})))
    assert "Invalid JWT Signature" in message and fake.grant_errors == ["Invalid JWT Signature."]
    assert "BEGIN PRIVATE KEY" not in message


def test_application_default_credentials_come_from_google_application_credentials(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake.write_service_account(tmp_path / "adc.json")))

    async def scenario():
        creds = credentials_from("vertex", {"auth": "google", "region": "global", "project": "chosen-project"})
        await creds.start()
        async with httpx.AsyncClient() as client:
            url = vertex.claude_url(creds.project, "global", "claude-haiku-4-5@20251001", stream=False,
                                    base_url=fake.url)
            headers = creds.headers_for("POST", url, {}, b"")
            response = await client.post(url, content=vertex.claude_body(BODY), headers=headers)
        await creds.close()
        return creds, response

    creds, response = asyncio.run(scenario())
    assert response.status_code == 200
    assert creds.source == "Google Application Default Credentials" and creds.project == "chosen-project"


def test_vertex_refuses_a_token_it_did_not_issue(fake):
    async def scenario():
        async with httpx.AsyncClient() as client:
            url = vertex.claude_url("p", "us-east5", "claude-sonnet-4-5@20250929", stream=False, base_url=fake.url)
            return await client.post(url, content=vertex.claude_body(BODY),
                                     headers={"authorization": "Bearer ya29.made-up"})

    response = asyncio.run(scenario())
    assert response.status_code == 401 and response.json()["error"]["status"] == "UNAUTHENTICATED"


def test_rotated_service_account_key_file_is_used_from_the_next_refresh(fake, tmp_path):
    fake.token_lifetime = 2
    path = fake.write_service_account(tmp_path / "sa.json")
    old_key = fake.key_id

    async def scenario():
        creds = credentials_from("vertex", {"auth": "google", "credentials_file": str(path)})
        await creds.start()
        new_key = fake.add_key()
        fake.write_service_account(path, new_key)  # the operator rotates the key file...
        statuses = []
        async with httpx.AsyncClient() as client:
            statuses.append((await predict(client, creds, fake)).status_code)
            deadline = time.monotonic() + 3
            while fake.grant_key_ids[-1] != new_key and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            fake.delete_key(old_key)  # ...then deletes the old key
            await asyncio.sleep(1.2)  # one more refresh, signed with the new key only
            statuses.append((await predict(client, creds, fake)).status_code)
        await creds.close()
        return new_key, statuses

    new_key, statuses = asyncio.run(scenario())
    assert statuses == [200, 200]
    assert fake.grant_key_ids[0] == old_key and set(fake.grant_key_ids[1:]) == {new_key}
    assert not fake.grant_errors
