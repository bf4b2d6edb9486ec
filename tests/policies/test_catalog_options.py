"""Provider and endpoint `options` are checked at load against their protocol: a wrong key or value
stops startup (exit code 2) naming it, instead of failing every request that reaches it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from policies.catalog import CatalogError, Options, load_catalog

OPENAI_MODEL = "openai/gpt-5.4"


def endpoint_with(options: dict, *, provider: str = "openai", model: str = OPENAI_MODEL):
    catalog = load_catalog([{"id": model, "endpoints": [{"provider": provider, "options": options}]}])
    return catalog.get(model).endpoint(provider)


def test_options_become_typed_values_with_defaults_for_what_is_left_out():
    endpoint = endpoint_with({"reasoning": None})
    assert endpoint.options.reasoning is None
    # A config entry's `options` replace the built-in endpoint's as a whole; the rest are defaults.
    assert endpoint.options.max_tokens_field == "max_tokens"
    assert Options().auth == "x-api-key" and Options().thinking == "budget"


def test_an_endpoint_may_speak_another_protocol_than_its_provider():
    endpoint = load_catalog().get("openai/gpt-5.5-pro").endpoint("openai")
    assert endpoint.protocol == "openai-responses"
    assert load_catalog().get("openai/gpt-5.4").endpoint("openai").protocol is None  # the provider's
    # Options are checked against the endpoint's own protocol, which has none of chat's.
    with pytest.raises(CatalogError, match="unknown option 'reasoning' for protocol 'openai-responses'"):
        load_catalog([{"id": "openai/gpt-5.5-pro", "endpoints": [
            {"provider": "openai", "options": {"reasoning": "reasoning_effort"}}]}])
    with pytest.raises(CatalogError, match="unknown protocol 'openai-realtime'"):
        load_catalog([{"id": "openai/gpt-5.5-pro", "endpoints": [
            {"provider": "openai", "protocol": "openai-realtime"}]}])


def test_endpoint_options_are_laid_over_the_providers():
    catalog = load_catalog(provider_overrides={"kimi-local": {"protocol": "openai", "base_url": "http://127.0.0.1:1",
                                                              "options": {"reasoning": "thinking"}}},
                           model_overrides=[{"id": "moonshotai/kimi-k2.6", "endpoints": [
                               {"provider": "kimi-local", "upstream_model": "kimi",
                                "pricing": {"input": 1.0, "output": 2.0},
                                "options": {"max_tokens_field": "max_completion_tokens"}}]}])
    options = catalog.get("moonshotai/kimi-k2.6").endpoint("kimi-local").options
    assert (options.reasoning, options.max_tokens_field) == ("thinking", "max_completion_tokens")
    assert catalog.provider("kimi-local").options.reasoning == "thinking"


@pytest.mark.parametrize("options,named", [
    ({"max_tokens_field": "max_tokenz"}, "max_tokens_field"),
    ({"reasoning": "think_hard"}, "reasoning"),
    ({"api": "completions"}, "api"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),  # not an option at all
    ({"auth": "bearer"}, "auth"),                        # an Anthropic-protocol option
])
def test_a_wrong_openai_option_is_refused_naming_it(options, named):
    with pytest.raises(CatalogError) as refused:
        endpoint_with(options)
    message = str(refused.value)
    assert named in message and OPENAI_MODEL in message and "'openai'" in message


@pytest.mark.parametrize("options", [{"auth": "basic"}, {"max_tokens_field": "max_tokens"}])
def test_a_wrong_anthropic_provider_option_is_refused_naming_the_provider(options):
    with pytest.raises(CatalogError, match="provider 'anthropic'"):
        load_catalog(provider_overrides={"anthropic": {"options": options}})


@pytest.mark.parametrize("value", [-1, "fast", float("nan"), True])
def test_mock_timings_must_be_non_negative_numbers(value):
    with pytest.raises(CatalogError, match="ttft_ms"):
        load_catalog(provider_overrides={"mock": {"options": {"ttft_ms": value}}})


def test_mock_timings_are_read_as_numbers():
    catalog = load_catalog(provider_overrides={"mock": {"options": {"ttft_ms": 40, "tokens_per_second": 120.5}}})
    assert (catalog.provider("mock").options.ttft_ms, catalog.provider("mock").options.tokens_per_second) == (40.0, 120.5)


def test_gateway_serve_with_a_wrong_option_exits_2_naming_it(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {"openai": {"api_key": "sk-x"}},
        "models": [{"id": OPENAI_MODEL, "endpoints": [{"provider": "openai",
                                                       "options": {"max_tokens_field": "max_tokenz"}}]}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", "0"],
                            check=False, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2
    assert "max_tokens_field" in result.stderr and "max_tokenz" in result.stderr
    assert "Traceback" not in result.stderr


def test_only_anthropics_own_api_runs_the_web_search_tool_itself():
    catalog = load_catalog()
    assert catalog.provider("anthropic").options.web_search == "native"
    assert catalog.provider("amazon-bedrock").options.web_search == "gateway"  # Bedrock has no web search
    compat = load_catalog(provider_overrides={"compat": {"protocol": "anthropic", "base_url": "http://127.0.0.1:1"}})
    assert compat.provider("compat").options.web_search == "gateway"
    with pytest.raises(CatalogError, match="web_search"):
        load_catalog(provider_overrides={"anthropic": {"options": {"web_search": "yes"}}})
    with pytest.raises(CatalogError, match="web_search"):
        load_catalog(provider_overrides={"openai": {"options": {"web_search": "native"}}})


def test_searches_an_upstream_runs_itself_cost_the_catalogs_price_each():
    from policies.pricing import cost_usd
    from providers.base import Usage
    pricing = load_catalog().get("anthropic/claude-sonnet-4.6").endpoint("anthropic").pricing
    assert pricing.web_search == 0.01
    usage = Usage()
    usage.update_from({"input_tokens": 1000, "output_tokens": 0, "server_tool_use": {"web_search_requests": 3}})
    assert usage.web_search_requests == 3
    assert cost_usd(usage, pricing) == pytest.approx(1000 * 3.0 / 1e6 + 0.03)
    with pytest.raises(CatalogError, match="web_search"):
        load_catalog(model_overrides=[{"id": "x/y", "endpoints": [
            {"provider": "anthropic", "upstream_model": "y", "pricing": {"input": 1, "output": 1, "web_search": -1}}]}])
