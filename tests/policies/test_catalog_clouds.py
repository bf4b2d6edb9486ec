"""The cloud endpoints of policies/catalog_clouds.yaml: the catalog loads them over the built-in
data as a config file's `models:` would, so the same router id has several clouds; the file names
its sources and marks every unconfirmed price."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.credentials import credentials_from
from policies import catalog

CLOUDS = Path(catalog.__file__).with_name("catalog_clouds.yaml")
CLOUD_PROVIDERS = {"amazon-bedrock", "google-vertex", "azure"}
_CATALOG_PROVIDER_FIELDS = {"protocol", "base_url", "retains_prompts", "zdr", "options"}


@pytest.fixture(scope="module")
def clouds():
    return yaml.safe_load(CLOUDS.read_text())


@pytest.fixture(scope="module")
def merged():
    """Every model of the catalog, the clouds' endpoints merged in by the loader."""
    return catalog.load_catalog().models


def test_header_names_the_price_lists_and_the_date():
    head = CLOUDS.read_text().split("\nproviders:", 1)[0]
    for source in ("https://aws.amazon.com/bedrock/pricing/",
                   "https://cloud.google.com/vertex-ai/generative-ai/pricing",
                   "https://azure.microsoft.com/en-us/pricing/details/cognitive-services/openai-service/"):
        assert source in head
    assert "2026-12-01" in head


def test_cloud_endpoints_attach_to_built_in_models(clouds):
    known = {raw["id"] for raw in catalog._builtin_data()["models"]}
    assert {entry["id"] for entry in clouds["models"]} <= known


def test_one_router_id_is_served_by_several_clouds(merged):
    providers = {e.provider for e in merged["anthropic/claude-sonnet-4.6"].endpoints}
    assert {"anthropic", "amazon-bedrock", "google-vertex"} <= providers
    assert {"anthropic", "amazon-bedrock", "google-vertex", "azure-foundry"} <= {
        e.provider for e in merged["anthropic/claude-sonnet-4.5"].endpoints}
    assert "azure" in {e.provider for e in merged["openai/gpt-5.4"].endpoints}
    vertex_sonnet = merged["anthropic/claude-sonnet-4.5"].endpoint("google-vertex")
    assert vertex_sonnet.upstream_model == "claude-sonnet-4-5@20250929"


def test_every_cloud_price_not_confirmed_is_marked(merged):
    for model in merged.values():
        for endpoint in model.endpoints:
            if endpoint.provider in ("google-vertex", "azure", "azure-foundry"):
                assert endpoint.pricing.verified is False, (model.id, endpoint.provider)
                assert endpoint.pricing.input is not None and endpoint.pricing.output is not None


def test_gemini_on_vertex_speaks_the_gemini_protocol(merged):
    endpoint = merged["google/gemini-3.1-pro-preview"].endpoint("google-vertex")
    assert endpoint.options.protocol == "gemini"


@pytest.mark.parametrize("name, extra, kind", [
    ("amazon-bedrock", {}, "sigv4"), ("amazon-bedrock", {"api_key": "a-bedrock-api-key"}, "bearer"),
    ("google-vertex", {}, "google"), ("azure", {"api_key": "configured-in-the-config-file"}, "azure"),
    ("azure-foundry", {"api_key": "configured-in-the-config-file"}, "x-api-key")])
def test_cloud_providers_auth_settings_are_valid(clouds, name, extra, kind):
    settings = {**clouds["providers"][name], **extra}
    assert set(clouds["providers"][name]) - _CATALOG_PROVIDER_FIELDS <= {"auth", "region"}
    assert credentials_from(name, settings).kind == kind
