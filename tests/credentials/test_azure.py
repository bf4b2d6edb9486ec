"""Azure: an `api-key`, or an Entra ID client-credentials token from a fake tenant that checks the
secret, accepted by a fake resource that also requires `api-version` on the deployment path."""
from __future__ import annotations

import asyncio

import pytest

from gateway.credentials import credentials_from
from providers import azure
from tests.credentials.conftest import post_with, refusal, sent_once, statuses_for
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


def chat(creds, url, body=CHAT):
    """A request for one chat completion at `url`, for `sent_once` and `statuses_for`."""
    return lambda client: post_with(client, creds, url, {"content-type": "application/json"}, body)


def test_api_key_on_the_deployment_path_with_api_version(fake):
    creds = credentials_from("azure", {"auth": "azure", "api_key": fake.resource_key})
    response = asyncio.run(sent_once(creds, chat(creds, azure.deployment_url(fake.url, "gpt-4o-prod", "2024-10-21"))))
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"
    assert fake.requests[0].headers["api-key"] == fake.resource_key
    assert fake.deployments == ["gpt-4o-prod"]


def test_deployment_path_without_api_version_is_not_found(fake):
    creds = credentials_from("azure", {"auth": "azure", "api_key": fake.resource_key})
    response = asyncio.run(sent_once(creds, chat(creds, f"{fake.url}/openai/deployments/gpt-4o-prod/chat/completions")))
    assert response.status_code == 404 and response.json()["error"]["message"] == "Resource not found"


def test_wrong_api_key_is_refused(fake):
    creds = credentials_from("azure", {"auth": "azure", "api_key": "not-the-key-00000000"})
    response = asyncio.run(sent_once(creds, chat(creds, azure.deployment_url(fake.url, "d"))))
    assert response.status_code == 401 and "Access denied" in response.json()["error"]["message"]


def test_entra_client_credentials_token_on_the_v1_path(fake):
    creds = credentials_from("azure-eu", entra_settings(fake))
    response = asyncio.run(sent_once(creds, chat(creds, azure.v1_url(fake.url + "/openai/v1"),
                                                 CHAT.replace(b'{', b'{"model":"gpt-4o-prod",', 1))))
    assert response.status_code == 200, response.text
    assert fake.requests[-1].headers["authorization"].startswith("Bearer eyJ")
    assert fake.deployments == ["gpt-4o-prod"]


def test_entra_token_is_refreshed_before_expiry(fake):
    fake.token_lifetime = 2

    async def scenario():
        creds = credentials_from("azure", entra_settings(fake))
        await creds.start()
        statuses = await statuses_for(2.6, chat(creds, azure.deployment_url(fake.url, "d")))
        await creds.close()
        return statuses

    statuses = asyncio.run(scenario())
    assert set(statuses) == {200} and len(fake.tokens) >= 2


def test_wrong_client_secret_names_provider_and_source_never_the_secret(fake):
    secret = "wr0ng-s3cret-value-that-must-not-leak"

    creds = credentials_from("azure-eu", entra_settings(fake, client_secret=secret))
    message = asyncio.run(refusal(creds))
    assert message.startswith(f"provider azure-eu: no usable credentials from Entra ID client credentials "
                              f"(tenant {fake.tenant_id}, client {fake.client_id})")
    assert "AADSTS7000215" in message and "401" in message
    assert secret not in message and secret not in repr(creds)
