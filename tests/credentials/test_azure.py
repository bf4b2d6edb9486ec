"""Azure: an `api-key`, or an Entra ID client-credentials token from a fake tenant that checks the
secret, accepted by a fake resource that also requires `api-version` on the deployment path."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.credentials import CredentialsUnavailable, credentials_from
from providers import azure
from tests.fakes.azure import AzureFake

CHAT = b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}'


@pytest.fixture(scope="module")
def server():
    with AzureFake() as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    server.tokens.clear()
    server.deployments.clear()
    server.token_lifetime = 3599
    return server


def entra_settings(fake, **overrides):
    return {"auth": "azure", "tenant_id": fake.tenant_id, "client_id": fake.client_id,
            "client_secret": fake.client_secret, "authority_host": fake.url, **overrides}


async def chat(client, creds, url, body=CHAT):
    headers = {"content-type": "application/json"}
    headers.update(creds.headers_for("POST", url, headers, body))
    return await client.post(url, content=body, headers=headers)


def test_api_key_on_the_deployment_path_with_api_version(fake):
    async def scenario():
        creds = credentials_from("azure", {"auth": "azure", "api_key": fake.resource_key})
        await creds.start()
        async with httpx.AsyncClient() as client:
            return await chat(client, creds, azure.deployment_url(fake.url, "gpt-4o-prod", "2024-10-21"))

    response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"
    assert fake.requests[0].headers["api-key"] == fake.resource_key
    assert fake.deployments == ["gpt-4o-prod"]


def test_deployment_path_without_api_version_is_not_found(fake):
    async def scenario():
        creds = credentials_from("azure", {"auth": "azure", "api_key": fake.resource_key})
        async with httpx.AsyncClient() as client:
            return await chat(client, creds, f"{fake.url}/openai/deployments/gpt-4o-prod/chat/completions")

    response = asyncio.run(scenario())
    assert response.status_code == 404 and response.json()["error"]["message"] == "Resource not found"


def test_wrong_api_key_is_refused(fake):
    async def scenario():
        creds = credentials_from("azure", {"auth": "azure", "api_key": "not-the-key-00000000"})
        async with httpx.AsyncClient() as client:
            return await chat(client, creds, azure.deployment_url(fake.url, "d"))

    response = asyncio.run(scenario())
    assert response.status_code == 401 and "Access denied" in response.json()["error"]["message"]


def test_entra_client_credentials_token_on_the_v1_path(fake):
    async def scenario():
        creds = credentials_from("azure-eu", entra_settings(fake))
        await creds.start()
        async with httpx.AsyncClient() as client:
            response = await chat(client, creds, azure.v1_url(fake.url + "/openai/v1"),
                                  CHAT.replace(b'{', b'{"model":"gpt-4o-prod",', 1))
        await creds.close()
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert fake.requests[-1].headers["authorization"].startswith("Bearer eyJ")
    assert fake.deployments == ["gpt-4o-prod"]


def test_entra_token_is_refreshed_before_expiry(fake):
    fake.token_lifetime = 2

    async def scenario():
        creds = credentials_from("azure", entra_settings(fake))
        await creds.start()
        statuses = []
        async with httpx.AsyncClient() as client:
            end = time.monotonic() + 2.6
            while time.monotonic() < end:
                statuses.append((await chat(client, creds, azure.deployment_url(fake.url, "d"))).status_code)
                await asyncio.sleep(0.05)
        await creds.close()
        return statuses

    statuses = asyncio.run(scenario())
    assert set(statuses) == {200} and len(fake.tokens) >= 2


def test_wrong_client_secret_names_provider_and_source_never_the_secret(fake):
    secret = "wr0ng-s3cret-value-that-must-not-leak"

    async def scenario():
        creds = credentials_from("azure-eu", entra_settings(fake, client_secret=secret))
        await creds.start()
        await creds.close()
        with pytest.raises(CredentialsUnavailable) as caught:
            creds.headers_for("POST", "https://x", {}, b"")
        return creds, str(caught.value)

    creds, message = asyncio.run(scenario())
    assert message.startswith(f"provider azure-eu: no usable credentials from Entra ID client credentials "
                              f"(tenant {fake.tenant_id}, client {fake.client_id})")
    assert "AADSTS7000215" in message and "401" in message
    assert secret not in message and secret not in repr(creds)
