"""The cloud endpoints prepared in policies/catalog_clouds.yaml: they merge into the built-in
catalog as a config file's `models:` would, pass the catalog's own validation, give the same
router id several clouds, name their sources, and mark every unconfirmed price."""
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
def merged(clouds):
    """Every model with the clouds' endpoints merged in, built by the catalog's own validation."""
    builtin = catalog._builtin_data()
    providers = catalog._merge_providers(builtin["providers"], {})
    infos = {name.lower(): catalog._build_provider(name, raw) for name, raw in providers.items()}
    for name, raw in clouds["providers"].items():
        # The protocols `bedrock` and `vertex` and the `auth` fields are new to the catalog's loader.
        infos[name.lower()] = catalog.ProviderInfo(
            name=name, protocol=raw["protocol"], base_url=raw["base_url"], retains_prompts=raw["retains_prompts"],
            zdr=raw["zdr"])
    return {raw["id"]: catalog._build_model(raw, infos)
            for raw in catalog._merge_models(builtin["models"], clouds["models"])}


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


@pytest.mark.parametrize("name, extra", [("amazon-bedrock", {}), ("google-vertex", {}),
                                         ("azure", {"api_key": "configured-in-the-config-file"}),
                                         ("azure-foundry", {"api_key": "configured-in-the-config-file"})])
def test_cloud_providers_auth_settings_are_valid(clouds, name, extra):
    settings = {**clouds["providers"][name], **extra}
    assert set(clouds["providers"][name]) - _CATALOG_PROVIDER_FIELDS <= {"auth", "region"}
    assert credentials_from(name, settings).kind == settings["auth"]
