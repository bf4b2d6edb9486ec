"""The model catalog: built-in data, config overrides, and the checks made at load."""
from __future__ import annotations

from importlib import resources

import pytest

from policies.catalog import CatalogError, Endpoint, load_catalog

REQUIRED_MODELS = [
    "anthropic/claude-opus-4.8", "anthropic/claude-opus-4.6", "anthropic/claude-sonnet-4.6",
    "anthropic/claude-haiku-4.5", "google/gemini-3.5-flash", "google/gemini-3.1-pro-preview",
    "google/gemini-3.1-flash-lite", "google/gemini-3-flash-preview", "openai/gpt-5.5-pro",
    "openai/gpt-5.5", "openai/gpt-5.4", "moonshotai/kimi-k2.6", "moonshotai/kimi-k2.5",
    "minimax/minimax-m2.5", "qwen/qwen3.6-plus",
    # the previous generation still in wide use
    "anthropic/claude-sonnet-4.5", "anthropic/claude-opus-4.5",
]

REQUIRED_ALIASES = {
    "claude-opus-4-8": "anthropic/claude-opus-4.8",
    "claude-sonnet-4-6": "anthropic/claude-sonnet-4.6",
    "claude-haiku-4-5": "anthropic/claude-haiku-4.5",
    "claude-sonnet-4-5": "anthropic/claude-sonnet-4.5",
    "gpt-5.5": "openai/gpt-5.5",
    "gemini-3.5-flash": "google/gemini-3.5-flash",
}


def new_model(**fields):
    model = {
        "id": "local/llama-9",
        "context_length": 32768,
        "max_output": 4096,
        "endpoints": [{"provider": "openai", "upstream_model": "llama-9",
                       "pricing": {"input": 0.1, "output": 0.2}}],
    }
    model.update(fields)
    return model


# -- the built-in data ---------------------------------------------------------------------------

def test_builtin_catalog_has_every_required_model_with_positive_prices():
    catalog = load_catalog()
    for model_id in REQUIRED_MODELS:
        model = catalog.models[model_id]
        assert model.endpoints, model_id
        for endpoint in model.endpoints:
            p = endpoint.pricing
            prices = [p.input, p.output, p.cache_write, p.cache_write_1h, p.cache_read]
            assert all(price is not None and price > 0 for price in prices), (model_id, p)


def test_builtin_models_carry_names_dates_limits_and_tokenizer():
    for model in load_catalog().models.values():
        assert model.display_name and model.display_name != model.id
        assert model.created_at.endswith("Z") and model.created_at[:4] in ("2025", "2026")
        assert model.context_length > model.max_output > 0
        assert "text" in model.input_modalities
        assert model.supported_parameters and model.tokenizer != "generic"


def test_native_ids_and_latest_aliases_name_the_right_models():
    catalog = load_catalog()
    for alias, model_id in REQUIRED_ALIASES.items():
        assert catalog.get(alias).id == model_id


@pytest.mark.parametrize("family", ["opus", "sonnet", "haiku"])
def test_latest_alias_names_the_newest_model_of_its_family(family):
    catalog = load_catalog()
    family_models = [m for m in catalog.models.values()
                     if m.vendor == "anthropic" and f"claude-{family}-" in m.id]
    newest = max(family_models, key=lambda m: m.created_at)
    assert catalog.get(f"~anthropic/claude-{family}-latest") is newest


def test_builtin_providers_cover_every_vendor_prefix_and_mock():
    catalog = load_catalog()
    vendors = {model.vendor for model in catalog.models.values()}
    assert vendors <= set(catalog.providers)
    assert catalog.providers["mock"].protocol == "mock"
    assert catalog.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert catalog.providers["openai"].base_url == "https://api.openai.com/v1"
    assert catalog.providers["moonshotai"].base_url == "https://api.moonshot.ai/v1"
    google = catalog.providers["google"]
    assert (google.protocol, google.base_url) == ("gemini", "https://generativelanguage.googleapis.com/v1beta")
    compatible = catalog.providers["google-openai"]  # kept as data, for a config file's endpoints
    assert (compatible.protocol, compatible.base_url) == (
        "openai", "https://generativelanguage.googleapis.com/v1beta/openai")
    assert all(p.api_key is None for p in catalog.providers.values())


def test_claude_and_kimi_models_can_be_routed_to_a_second_host():
    catalog = load_catalog()
    for model_id in ["anthropic/claude-opus-4.8", "anthropic/claude-sonnet-4.5",
                     "moonshotai/kimi-k2.6", "moonshotai/kimi-k2.5"]:
        providers = [e.provider for e in catalog.models[model_id].endpoints]
        assert len(providers) >= 2 and providers[0] == model_id.split("/")[0], providers


def test_bedrock_endpoints_retain_nothing_and_their_prices_are_marked_unverified():
    bedrock = load_catalog().models["anthropic/claude-sonnet-4.5"].endpoint("amazon-bedrock")
    assert (bedrock.retains_prompts, bedrock.zdr) == (False, True)
    assert bedrock.pricing.verified is False
    provider = load_catalog().providers["amazon-bedrock"]
    # catalog_clouds.yaml makes Bedrock InvokeModel, signed (SigV4) unless an api_key is configured.
    assert (provider.protocol, provider.base_url) == ("bedrock", "https://bedrock-runtime.us-east-1.amazonaws.com")


def test_openai_reasoning_endpoints_name_their_protocol_options():
    endpoint = load_catalog().models["openai/gpt-5.5"].endpoint("openai")
    assert endpoint.options.max_tokens_field == "max_completion_tokens"
    assert endpoint.options.reasoning == "reasoning_effort"


def test_endpoints_inherit_limits_and_parameters_from_their_model():
    model = load_catalog().models["anthropic/claude-haiku-4.5"]
    for endpoint in model.endpoints:
        assert endpoint.context_length == model.context_length == 200_000
        assert endpoint.supported_parameters == model.supported_parameters


def test_data_file_names_its_price_sources_and_the_date_they_were_read():
    text = resources.files("policies").joinpath("catalog.yaml").read_text(encoding="utf-8")
    header = text.split("\nproviders:")[0]
    assert "2026-11-24" in header
    for source in ["platform.claude.com", "developers.openai.com", "ai.google.dev",
                   "platform.kimi.ai", "platform.minimax.io", "alibabacloud.com"]:
        assert source in header


def test_lookups_ignore_case_and_endpoints_are_hashable():
    catalog = load_catalog()
    assert catalog.get("ANTHROPIC/Claude-Opus-4.8").id == "anthropic/claude-opus-4.8"
    assert catalog.get("GPT-5.5").id == "openai/gpt-5.5"
    assert catalog.get("gpt-9") is None
    assert catalog.provider("Amazon-Bedrock").name == "amazon-bedrock"
    assert len({e for m in catalog.models.values() for e in m.endpoints}) > 17
    assert isinstance(catalog.models["openai/gpt-5.4"].endpoints[0], Endpoint)


# -- config overrides ----------------------------------------------------------------------------

def test_model_override_replaces_the_given_fields_and_keeps_the_rest():
    catalog = load_catalog([{"id": "anthropic/claude-haiku-4.5", "display_name": "Haiku",
                             "aliases": ["fast"]}])
    model = catalog.models["anthropic/claude-haiku-4.5"]
    assert (model.display_name, model.aliases) == ("Haiku", ("fast",))
    assert model.context_length == 200_000 and len(model.endpoints) == 4  # Anthropic, Bedrock, Foundry, Vertex
    assert catalog.get("fast") is model and catalog.get("claude-haiku-4-5") is None


def test_model_override_matches_the_id_case_insensitively():
    catalog = load_catalog([{"id": "Anthropic/Claude-Haiku-4.5", "max_output": 1000}])
    assert catalog.models["anthropic/claude-haiku-4.5"].max_output == 1000
    assert len(catalog.models) == len(load_catalog().models)


def test_endpoint_override_merges_pricing_field_by_field():
    catalog = load_catalog([{
        "id": "anthropic/claude-opus-4.8",
        "endpoints": [{"provider": "anthropic", "upstream_model": "claude-opus-4-8-custom",
                       "pricing": {"input": 4.0, "output": 20.0}}],
    }])
    model = catalog.models["anthropic/claude-opus-4.8"]
    endpoint = model.endpoint("anthropic")
    assert endpoint.upstream_model == "claude-opus-4-8-custom"
    assert (endpoint.pricing.input, endpoint.pricing.output) == (4.0, 20.0)
    assert (endpoint.pricing.cache_write_1h, endpoint.pricing.cache_read) == (10.0, 0.5)
    assert model.endpoint("amazon-bedrock").pricing.input == 5.0  # other endpoints untouched


def test_override_adds_an_endpoint_served_by_a_new_provider():
    catalog = load_catalog(
        [{"id": "moonshotai/kimi-k2.6",
          "endpoints": [{"provider": "kimi-local", "upstream_model": "kimi", "quantization": "fp8",
                         "pricing": {"input": 0.0, "output": 0.0}}]}],
        {"kimi-local": {"protocol": "openai", "base_url": "http://127.0.0.1:8000/v1",
                        "api_key": "k", "zdr": True}})
    model = catalog.models["moonshotai/kimi-k2.6"]
    assert [e.provider for e in model.endpoints] == ["moonshotai", "novita", "kimi-local"]
    local = model.endpoint("kimi-local")
    assert (local.quantization, local.zdr, local.retains_prompts) == ("fp8", True, False)
    assert local.pricing.cache_read is None  # not given: unknown
    assert local.context_length == model.context_length


def test_override_adds_a_new_model_with_defaults_for_what_it_leaves_out():
    catalog = load_catalog([new_model()])
    model = catalog.models["local/llama-9"]
    assert list(catalog.models)[-1] == "local/llama-9"
    assert (model.display_name, model.created_at) == ("local/llama-9", "1970-01-01T00:00:00Z")
    assert (model.input_modalities, model.aliases, model.tokenizer) == (("text",), (), "generic")
    assert model.endpoints[0].pricing.verified is True


def test_provider_override_points_every_builtin_endpoint_at_another_server():
    catalog = load_catalog(provider_overrides={
        "anthropic": {"base_url": "http://127.0.0.1:9000", "api_key": "sk-test"}})
    anthropic = catalog.providers["anthropic"]
    assert (anthropic.protocol, anthropic.base_url) == ("anthropic", "http://127.0.0.1:9000")
    assert anthropic.api_key == "sk-test" and "sk-test" not in repr(anthropic)
    assert catalog.models["anthropic/claude-sonnet-4.5"].endpoint("anthropic") is not None


def test_provider_data_policy_override_is_inherited_by_its_endpoints():
    builtin = load_catalog().models["anthropic/claude-opus-4.6"].endpoint("anthropic")
    assert (builtin.retains_prompts, builtin.zdr) == (True, False)
    catalog = load_catalog(provider_overrides={"Anthropic": {"retains_prompts": False,
                                                             "zdr": True}})
    endpoint = catalog.models["anthropic/claude-opus-4.6"].endpoint("anthropic")
    assert (endpoint.retains_prompts, endpoint.zdr) == (False, True)


def test_endpoint_data_policy_overrides_its_providers():
    catalog = load_catalog([{"id": "openai/gpt-5.4",
                             "endpoints": [{"provider": "openai", "retains_prompts": False}]}])
    endpoint = catalog.models["openai/gpt-5.4"].endpoint("openai")
    assert endpoint.retains_prompts is False
    assert catalog.providers["openai"].retains_prompts is True


def test_api_key_is_never_taken_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    catalog = load_catalog()
    assert catalog.providers["anthropic"].api_key is None
    assert catalog.providers["openai"].api_key is None


def test_overrides_leave_the_builtin_catalog_unchanged():
    load_catalog([{"id": "openai/gpt-5.4", "aliases": ["renamed"]}],
                 {"openai": {"base_url": "http://127.0.0.1:1"}})
    catalog = load_catalog()
    assert catalog.get("gpt-5.4").id == "openai/gpt-5.4"
    assert catalog.providers["openai"].base_url == "https://api.openai.com/v1"


# -- checks at load: one test each ---------------------------------------------------------------

def test_duplicate_alias_is_refused():
    with pytest.raises(CatalogError, match=r"local/llama-9.*alias 'gpt-5\.5'.*openai/gpt-5\.5"):
        load_catalog([new_model(aliases=["gpt-5.5"])])


def test_alias_colliding_with_another_models_id_is_refused_whatever_its_case():
    expected = r"alias 'OpenAI/GPT-5\.4'.*id of model 'openai/gpt-5\.4'"
    with pytest.raises(CatalogError, match=expected):
        load_catalog([new_model(aliases=["OpenAI/GPT-5.4"])])


def test_endpoint_naming_an_unknown_provider_is_refused():
    model = new_model(endpoints=[{"provider": "nowhere", "upstream_model": "x",
                                  "pricing": {"input": 1, "output": 1}}])
    with pytest.raises(CatalogError, match=r"model 'local/llama-9' endpoint 'nowhere'.*provider"):
        load_catalog([model])


def test_negative_price_is_refused():
    override = {"id": "openai/gpt-5.4",
                "endpoints": [{"provider": "openai", "pricing": {"cache_read": -0.1}}]}
    expected = r"openai/gpt-5\.4' endpoint 'openai'.*pricing\.cache_read"
    with pytest.raises(CatalogError, match=expected):
        load_catalog([override])


def test_unknown_protocol_is_refused():
    with pytest.raises(CatalogError, match=r"provider 'grpc-host': unknown protocol 'grpc'"):
        load_catalog(provider_overrides={"grpc-host": {"protocol": "grpc",
                                                       "base_url": "http://h"}})


def test_new_provider_without_base_url_is_refused():
    with pytest.raises(CatalogError, match=r"provider 'vllm': field 'base_url' is required"):
        load_catalog(provider_overrides={"vllm": {"protocol": "openai"}})


def test_new_endpoint_without_its_upstream_model_is_refused():
    model = new_model(endpoints=[{"provider": "openai"}])
    expected = r"model 'local/llama-9' endpoint 'openai': field 'upstream_model' is required"
    with pytest.raises(CatalogError, match=expected):
        load_catalog([model])


def test_field_of_the_wrong_type_is_refused():
    expected = r"model 'local/llama-9': field 'context_length' must be a positive integer"
    with pytest.raises(CatalogError, match=expected):
        load_catalog([new_model(context_length="32k")])
    with pytest.raises(CatalogError, match=r"provider 'openai': field 'zdr' must be true or false"):
        load_catalog(provider_overrides={"openai": {"zdr": "yes"}})


def test_misspelled_field_is_refused_rather_than_ignored():
    expected = r"model 'local/llama-9': unknown field 'context_lenght'"
    with pytest.raises(CatalogError, match=expected):
        load_catalog([new_model(context_lenght=1)])


def test_two_endpoints_from_one_provider_are_refused():
    endpoint = {"provider": "openai", "upstream_model": "a", "pricing": {"input": 1, "output": 1}}
    with pytest.raises(CatalogError, match=r"provider 'openai' is listed twice"):
        load_catalog([new_model(endpoints=[endpoint, dict(endpoint, provider="OpenAI")])])


def test_release_date_that_is_not_rfc_3339_is_refused():
    with pytest.raises(CatalogError, match=r"field 'created_at' must be an RFC 3339 timestamp"):
        load_catalog([new_model(created_at="last spring")])


def test_override_entry_without_an_id_is_refused():
    with pytest.raises(CatalogError, match=r"models\[0\]: field 'id' is required"):
        load_catalog([{"display_name": "nameless"}])
