"""What a model entry leaves out: unknown limits, the protocol's parameters, unpriced; and the
providers' self-hosting fields (proxy, TLS files, discovery), checked at load."""
from __future__ import annotations

import pytest

from policies.catalog import PROTOCOL_PARAMETERS, CatalogError, load_catalog
from policies.pricing import cost_usd
from providers.base import Usage

LOCAL = {"local": {"protocol": "openai", "base_url": "http://127.0.0.1:8000/v1"}}


def three_lines(**extra) -> dict:
    return {"id": "local/coder", "endpoints": [{"provider": "local", "upstream_model": "coder", **extra}]}


def test_three_line_entry_loads_with_unknown_limits_protocol_parameters_and_no_price():
    model = load_catalog([three_lines()], LOCAL).get("local/coder")
    [endpoint] = model.endpoints
    assert (model.context_length, model.max_output) == (None, None)
    assert (endpoint.context_length, endpoint.max_output) == (None, None)
    assert endpoint.supported_parameters == PROTOCOL_PARAMETERS["openai"]
    assert {"tools", "tool_choice", "temperature", "top_p", "stop_sequences", "images"} <= endpoint.supported_parameters
    assert model.supported_parameters == endpoint.supported_parameters
    assert endpoint.pricing.unpriced and endpoint.pricing.input is None
    assert cost_usd(Usage(input_tokens=1000, output_tokens=1000), endpoint.pricing) == 0


def test_given_parameters_and_prices_are_kept_as_given():
    model = load_catalog([{**three_lines(pricing={"input": 1, "output": 2}), "supported_parameters": ["tools"],
                           "context_length": 32768}], LOCAL).get("local/coder")
    assert model.endpoints[0].supported_parameters == frozenset({"tools"})
    assert model.endpoints[0].context_length == 32768
    assert not model.endpoints[0].pricing.unpriced
    # An empty list is a statement too: nothing beyond the basics.
    empty = load_catalog([{**three_lines(), "supported_parameters": []}], LOCAL).get("local/coder")
    assert empty.endpoints[0].supported_parameters == frozenset()


def test_an_anthropic_protocol_endpoint_gets_anthropic_parameters():
    providers = {"gw2": {"protocol": "anthropic", "base_url": "http://127.0.0.1:9/"}}
    model = load_catalog([{"id": "gw2/m", "endpoints": [{"provider": "gw2", "upstream_model": "m"}]}],
                         providers).get("gw2/m")
    assert {"thinking", "cache_control", "documents"} <= model.endpoints[0].supported_parameters


@pytest.mark.parametrize(("fields", "message"), [
    ({"discover_interval": 0}, r"provider 'local': field 'discover_interval' must be a number of seconds >= 1"),
    ({"discover": "yes"}, r"provider 'local': field 'discover' must be true or false"),
    ({"tls_key": "/k.pem"}, r"provider 'local': field 'tls_key' needs 'tls_cert'"),
    ({"proxy": "https://proxy:3128"}, r"provider 'local': field 'proxy' must be an http:// URL \(or 'direct'\), "
                                      r"got 'https://proxy:3128'"),
    ({"proxy": "socks5://user:hidden@proxy:1080"}, r"got 'socks5://proxy:1080'"),
])
def test_self_hosting_fields_are_checked_at_load(fields, message):
    with pytest.raises(CatalogError, match=message) as caught:
        load_catalog([three_lines()], {"local": {**LOCAL["local"], **fields}})
    assert "hidden" not in str(caught.value)


def test_provider_carries_its_egress_and_discovery_settings():
    provider = load_catalog([], {"local": {**LOCAL["local"], "discover": True, "proxy": "http://u:p@proxy:3128",
                                           "ca_file": "/ca.pem"}}).providers["local"]
    assert provider.discover and provider.discover_interval == 300
    assert provider.proxy == "http://u:p@proxy:3128" and "u:p" not in repr(provider)
    assert provider.ca_file == "/ca.pem"
