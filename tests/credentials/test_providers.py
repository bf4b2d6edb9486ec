"""The credentials of a serving config's providers: which providers the executor authenticates,
what a reload keeps, and what a Vertex provider learns from its service-account file."""
from __future__ import annotations

import json

import pytest
import yaml

from gateway.credentials.config import authenticated, for_providers
from gateway.settings import ConfigError
from policies.catalog import load_catalog

AWS = {"aws_access_key_id": "AKIAFAKEPROVIDERSAAA", "aws_secret_access_key": "providersSecretAAAAAAAAAAAAAAAAAAAAAAAA"}


def providers(**overrides):
    return load_catalog(provider_overrides=overrides).providers


def service_account(path, project: str | None = "from-the-file"):
    info = {"type": "service_account", "client_email": "gw@p.iam.gserviceaccount.com", "token_uri": "http://x/token",
            "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}
    if project:
        info["project_id"] = project
    path.write_text(json.dumps(info))
    return str(path)


def test_only_providers_with_auth_or_a_cloud_protocol_are_authenticated_by_the_executor():
    catalog = providers(**{"proxy-bearer": {"protocol": "anthropic", "base_url": "http://x", "auth": "bearer",
                                            "api_key": "k" * 20}})
    assert authenticated(catalog["amazon-bedrock"]) and authenticated(catalog["google-vertex"])
    assert authenticated(catalog["proxy-bearer"]) and authenticated(catalog["azure"])
    # Without `auth:` the protocol places the key, as before.
    assert not authenticated(catalog["anthropic"]) and not authenticated(catalog["openai"])


def test_a_reload_keeps_unchanged_credentials_and_rebuilds_changed_ones(tmp_path):
    first, _ = for_providers({"amazon-bedrock": providers(**{"amazon-bedrock": AWS})["amazon-bedrock"]})
    again, _ = for_providers({"amazon-bedrock": providers(**{"amazon-bedrock": AWS})["amazon-bedrock"]}, first)
    assert again["amazon-bedrock"] is first["amazon-bedrock"]
    rotated = {**AWS, "aws_secret_access_key": "providersSecretBBBBBBBBBBBBBBBBBBBBBBBB"}
    changed, _ = for_providers({"amazon-bedrock": providers(**{"amazon-bedrock": rotated})["amazon-bedrock"]}, first)
    assert changed["amazon-bedrock"] is not first["amazon-bedrock"]


def test_vertex_takes_its_project_from_the_service_account_file(tmp_path):
    vertex = providers(**{"google-vertex": {"credentials_file": service_account(tmp_path / "sa.json")}})
    credentials, updated = for_providers({"google-vertex": vertex["google-vertex"]})
    assert credentials["google-vertex"].kind == "google"
    assert updated["google-vertex"].auth_settings["project"] == "from-the-file"


def test_vertex_without_a_project_anywhere_stops_startup_naming_the_field(tmp_path):
    vertex = providers(**{"google-vertex": {"credentials_file": service_account(tmp_path / "sa.json", None)}})
    with pytest.raises(ConfigError, match="provider 'google-vertex': field 'project' is required"):
        for_providers({"google-vertex": vertex["google-vertex"]})


def test_a_misplaced_auth_field_stops_startup_naming_it():
    catalog = providers(**{"google-vertex": {"aws_profile": "prod"}})
    with pytest.raises(ConfigError, match="field 'aws_profile' does not apply to auth 'google'"):
        for_providers({"google-vertex": catalog["google-vertex"]})


def test_an_unquoted_api_version_read_by_yaml_as_a_date_is_the_version_string():
    catalog = providers(**yaml.safe_load("azure: {protocol: azure, base_url: 'https://c.openai.azure.com', "
                                         "api_key: k0123456789, api_version: 2024-10-21}"))
    assert catalog["azure"].auth_settings["api_version"] == "2024-10-21"
