"""A provider's settings → its credentials: defaults by protocol, clear errors naming the provider
and the field, and no secret in any message or repr."""
from __future__ import annotations

import asyncio
import json

import pytest

from gateway.credentials import CredentialsUnavailable, auth_kind, credentials_from
from gateway.credentials.base import refresh_delay, retry_delay
from gateway.settings import ConfigError

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"


@pytest.mark.parametrize("settings, kind", [
    ({"protocol": "anthropic"}, "x-api-key"),
    ({"protocol": "openai"}, "bearer"),
    ({"protocol": "bedrock", "region": "us-east-1"}, "sigv4"),
    ({"protocol": "vertex"}, "google"),
    ({"protocol": "anthropic", "options": {"auth": "bearer"}}, "bearer"),
    ({"protocol": "anthropic", "auth": "azure", "api_key": "k" * 20}, "azure"),
])
def test_auth_defaults_by_protocol_and_can_be_chosen(settings, kind):
    assert auth_kind("p", settings) == kind
    assert credentials_from("p", settings).kind == kind


def test_static_keys_become_their_headers():
    anthropic = credentials_from("a", {"protocol": "anthropic", "api_key": "sk-ant-x"})
    assert anthropic.headers_for("POST", "u", {}, b"") == {"x-api-key": "sk-ant-x"}
    assert credentials_from("o", {"auth": "bearer", "api_key": "sk-x"}).headers_for("POST", "u", {}, b"") == \
        {"authorization": "Bearer sk-x"}
    assert credentials_from("z", {"auth": "azure", "api_key": "az"}).headers_for("POST", "u", {}, b"") == \
        {"api-key": "az"}
    assert credentials_from("local", {"protocol": "openai"}).headers_for("POST", "u", {}, b"") == {}


@pytest.mark.parametrize("settings, fragment", [
    ({"auth": "kerberos"}, "provider 'p': field 'auth' must be one of x-api-key, bearer, sigv4, google, azure, "
                           "got 'kerberos'"),
    ({"auth": "google", "aws_profile": "x"}, "provider 'p': field 'aws_profile' does not apply to auth 'google'"),
    ({"auth": "sigv4", "region": "us-east-1", "aws_access_key_id": "AKIA"},
     "provider 'p': field 'aws_secret_access_key' is required with 'aws_access_key_id'"),
    ({"auth": "sigv4", "region": "us-east-1", "aws_session_token": "t"}, "field 'aws_session_token' needs"),
    ({"auth": "sigv4", "region": "us-east-1", "aws_profile": "p", "aws_access_key_id": "A",
      "aws_secret_access_key": "S"}, "field 'aws_profile' and 'aws_access_key_id' exclude each other"),
    ({"auth": "sigv4", "base_url": "https://example.com"}, "provider 'p': field 'region' is required"),
    ({"auth": "sigv4", "region": 5}, "provider 'p': field 'region' must be a string, got int"),
    ({"auth": "azure"}, "auth 'azure' needs 'api_key', or 'tenant_id', 'client_id' and 'client_secret'"),
    ({"auth": "azure", "tenant_id": "t", "client_id": "c"}, "(missing 'client_secret')"),
    ({"auth": "azure", "api_key": "k", "tenant_id": "t"}, "field 'api_key' and 'tenant_id'"),
    ({"auth": "google", "credentials_file": "/nonexistent/sa.json"},
     "provider 'p': field 'credentials_file': cannot read /nonexistent/sa.json"),
])
def test_invalid_settings_name_the_provider_and_the_field(settings, fragment):
    with pytest.raises(ConfigError) as caught:
        credentials_from("p", settings)
    assert fragment in str(caught.value)


def test_region_is_read_from_a_bedrock_base_url():
    creds = credentials_from("b", {"protocol": "bedrock",
                                   "base_url": "https://bedrock-runtime.eu-central-1.amazonaws.com"})
    assert creds.region == "eu-central-1"


def test_credentials_file_must_be_a_service_account_key(tmp_path):
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"type": "authorized_user", "refresh_token": SECRET}))
    with pytest.raises(ConfigError, match="is not a service account key file") as caught:
        credentials_from("v", {"auth": "google", "credentials_file": str(user)})
    assert SECRET not in str(caught.value)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"type": "service_account", "client_email": "a@b", "private_key": SECRET}))
    with pytest.raises(ConfigError, match="lacks 'token_uri'") as caught:
        credentials_from("v", {"auth": "google", "credentials_file": str(partial)})
    assert SECRET not in str(caught.value)


def test_no_secret_appears_in_any_repr_or_error_message(tmp_path):
    built = [
        credentials_from("a", {"protocol": "anthropic", "api_key": SECRET}),
        credentials_from("o", {"auth": "bearer", "api_key": SECRET}),
        credentials_from("z", {"auth": "azure", "api_key": SECRET}),
        credentials_from("z", {"auth": "azure", "tenant_id": "t", "client_id": "c", "client_secret": SECRET,
                               "authority_host": "http://127.0.0.1:9"}),
        credentials_from("b", {"auth": "sigv4", "region": "us-east-1", "aws_access_key_id": "AKIAFAKE",
                               "aws_secret_access_key": SECRET, "aws_session_token": SECRET + "tok"}),
    ]
    for creds in built:
        assert SECRET not in repr(creds) and SECRET not in str(vars(creds).get("source"))
    entra = built[3]
    asyncio.run(entra.start())  # nothing listens on port 9: the refresh fails
    asyncio.run(entra.close())
    with pytest.raises(CredentialsUnavailable) as caught:
        entra.headers_for("POST", "u", {}, b"")
    assert "provider z" in str(caught.value) and SECRET not in str(caught.value)
    for bad in ({"auth": "sigv4", "region": "us-east-1", "aws_access_key_id": SECRET},
                {"auth": "azure", "api_key": SECRET, "client_secret": SECRET},
                {"auth": SECRET}):
        with pytest.raises(ConfigError) as caught:
            credentials_from("p", bad)
        assert SECRET not in str(caught.value)


def test_a_failure_message_that_echoes_a_secret_is_scrubbed():
    from gateway.credentials.base import scrub
    text = scrub(f"bad secret {SECRET} and key -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- "
                 "Bearer abcdefghijklmnop", [SECRET])
    assert SECRET not in text and "MIIE" not in text and "abcdefghijklmnop" not in text


def test_refresh_comes_before_expiry_and_retries_back_off():
    assert refresh_delay(now=1000, fetched_at=1000, expires_at=4600) == 3300  # 5 minutes early
    assert refresh_delay(now=1000, fetched_at=1000, expires_at=1002) == 1  # half-way through a short life
    assert refresh_delay(now=1000, fetched_at=1000, expires_at=999) == 0.5  # expired at once: not hammered
    assert [retry_delay(n, 0, None) for n in (1, 2, 3, 10)] == [1, 2, 4, 60]
    assert retry_delay(10, now=0, expires_at=20) == 10  # retried while the held token is still valid
