"""The Plan: attempts model after model under the preferences, fallbacks when the primary is
filtered out, the sort of a model suffix, and sorting across models with `partition: "none"`."""
from __future__ import annotations

from types import MappingProxyType

import pytest

from policies.catalog import Catalog, Endpoint, Model, Pricing, ProviderInfo, load_catalog
from policies.health import EndpointHealth, RoutingView
from policies.plan import Plan, build_plan
from policies.preference import NoEndpoint, Preferences, parse_preferences
from policies.resolve import Resolved, resolve, resolve_all

NOW = 2_000_000.0
PROVIDERS = ("fast", "cheap", "private")


def endpoint(provider: str, total_price: float, upstream: str) -> Endpoint:
    return Endpoint(provider=provider, upstream_model=upstream,
                    pricing=Pricing(total_price / 2, total_price / 2, None, None, None),
                    retains_prompts=provider != "private", zdr=provider == "private",
                    quantization=None, context_length=100_000, max_output=8_000,
                    supported_parameters=frozenset({"tools"}))


def model(model_id: str, *endpoints: Endpoint) -> Model:
    return Model(id=model_id, display_name=model_id, created_at="2026-01-01T00:00:00Z", aliases=(),
                 context_length=100_000, max_output=8_000, input_modalities=("text",),
                 supported_parameters=frozenset({"tools"}), tokenizer="generic",
                 endpoints=endpoints)


BIG = model("lab/big", endpoint("fast", 30.0, "big-v1"), endpoint("cheap", 20.0, "big"))
SMALL = model("lab/small", endpoint("fast", 4.0, "small-v1"),
              endpoint("private", 6.0, "small-private"))
UNSERVED = model("lab/unserved")
CATALOG = Catalog(
    models=MappingProxyType({m.id: m for m in (BIG, SMALL, UNSERVED)}),
    providers=MappingProxyType({name: ProviderInfo(name=name, protocol="openai",
                                                   base_url=f"http://{name}.test/v1")
                                for name in PROVIDERS}))


def resolved(*models: Model, sort: str | None = None) -> list[Resolved]:
    return [Resolved(m, sort, None) for m in models]


def plan(items, prefs: dict | Preferences | None = None, *, view: RoutingView = RoutingView.EMPTY,
         rand: float = 0.0, used: frozenset[str] = frozenset(), catalog: Catalog = CATALOG) -> Plan:
    if not isinstance(prefs, Preferences):
        prefs = parse_preferences(prefs)
    return build_plan(catalog, items, prefs, used_parameters=used, view=view, now=NOW, rand=rand)


def keys(result: Plan) -> list[str]:
    return [a.endpoint_key for a in result.attempts]


def test_attempts_follow_the_primary_model_then_each_fallback():
    result = plan(resolved(BIG, SMALL), {"sort": "price"})
    assert keys(result) == ["cheap/big", "fast/big-v1", "fast/small-v1", "private/small-private"]
    assert [a.model.id for a in result.attempts] == ["lab/big", "lab/big", "lab/small", "lab/small"]
    assert result.primary is BIG and result.models == (BIG, SMALL) and result.skipped == ()


def test_each_attempt_carries_its_provider_and_upstream_model():
    attempt = plan(resolved(SMALL), {"only": ["private"]}).attempts[0]
    assert attempt.provider is CATALOG.providers["private"]
    assert (attempt.upstream_model, attempt.endpoint_key, attempt.health) == (
        "small-private", "private/small-private", "healthy")


def test_a_model_suffix_sorts_only_its_own_model():
    view = RoutingView(endpoints={"fast/big-v1": EndpointHealth(output_tps=200.0),
                                  "cheap/big": EndpointHealth(output_tps=20.0),
                                  "private/small-private": EndpointHealth(output_tps=500.0),
                                  "fast/small-v1": EndpointHealth(output_tps=10.0)})
    items = [Resolved(BIG, "throughput", None), Resolved(SMALL, "price", None)]
    assert keys(plan(items, view=view)) == ["fast/big-v1", "cheap/big", "fast/small-v1",
                                            "private/small-private"]


def test_a_primary_emptied_by_the_filters_falls_through_to_the_fallbacks():
    result = plan(resolved(BIG, SMALL), {"zdr": True})
    assert keys(result) == ["private/small-private"]
    assert result.primary is BIG  # the model the client asked for, whatever serves it
    assert [(s.model_id, s.filter) for s in result.skipped] == [("lab/big", "provider.zdr")]


def test_a_fallback_emptied_by_the_filters_is_skipped():
    result = plan(resolved(SMALL, BIG), {"max_price": {"prompt": 5}})
    assert keys(result) == ["fast/small-v1", "private/small-private"]
    assert [s.model_id for s in result.skipped] == ["lab/big"]


def test_when_every_model_is_emptied_the_primarys_reason_is_raised():
    with pytest.raises(NoEndpoint) as caught:
        plan(resolved(BIG, SMALL), {"only": ["nowhere"]})
    assert caught.value.model_id == "lab/big" and caught.value.filter == "provider.only"
    assert str(caught.value) == ("no endpoint of 'lab/big' satisfies provider.only (nowhere); "
                                 "endpoints before that filter: fast, cheap")


def test_a_model_no_configured_provider_serves_is_skipped_like_a_filtered_one():
    result = plan(resolved(UNSERVED, SMALL), {"sort": "price"})
    assert keys(result) == ["fast/small-v1", "private/small-private"]
    assert result.skipped[0].filter == "configured providers"
    with pytest.raises(NoEndpoint, match=r"^no configured provider serves model 'lab/unserved'$"):
        plan(resolved(UNSERVED))


def test_an_endpoint_of_a_provider_the_catalog_lacks_is_left_out():
    stray = model("lab/stray", endpoint("gone", 1.0, "stray"), endpoint("cheap", 9.0, "stray"))
    assert keys(plan(resolved(stray))) == ["cheap/stray"]


def test_partition_model_keeps_the_primary_first_however_slow():
    view = RoutingView(endpoints={"fast/big-v1": EndpointHealth(output_tps=15.0),
                                  "fast/small-v1": EndpointHealth(output_tps=400.0)})
    result = plan(resolved(BIG, SMALL), {"sort": {"by": "throughput"}, "only": ["fast"]}, view=view)
    assert keys(result) == ["fast/big-v1", "fast/small-v1"]


def test_partition_none_sorts_the_endpoints_of_all_models_together():
    view = RoutingView(endpoints={"fast/big-v1": EndpointHealth(output_tps=15.0),
                                  "cheap/big": EndpointHealth(output_tps=60.0),
                                  "fast/small-v1": EndpointHealth(output_tps=400.0)})
    result = plan(resolved(BIG, SMALL), {"sort": {"by": "throughput", "partition": "none"}},
                  view=view)
    assert keys(result) == ["fast/small-v1", "cheap/big", "fast/big-v1", "private/small-private"]


def test_partition_none_by_price_finds_the_cheapest_model():
    result = plan(resolved(BIG, SMALL), {"sort": {"by": "price", "partition": "none"}})
    assert keys(result) == ["fast/small-v1", "private/small-private", "cheap/big", "fast/big-v1"]


def test_partition_none_still_puts_cooling_endpoints_last():
    view = RoutingView(endpoints={"fast/small-v1": EndpointHealth(cooldown_until=NOW + 30,
                                                                  failures=3)})
    result = plan(resolved(BIG, SMALL), {"sort": {"by": "price", "partition": "none"}}, view=view)
    assert keys(result)[-1] == "fast/small-v1"
    assert result.attempts[-1].health == "cooling"


def test_attempts_record_the_cooldown_state_seen_at_planning():
    view = RoutingView(endpoints={"fast/big-v1": EndpointHealth(cooldown_until=NOW - 1, failures=3),
                                  "cheap/big": EndpointHealth(cooldown_until=NOW + 60, failures=4)})
    result = plan(resolved(BIG), {"sort": "price"}, view=view)
    assert [(a.endpoint_key, a.health) for a in result.attempts] == [
        ("fast/big-v1", "probe"), ("cheap/big", "cooling")]


def test_load_balancing_uses_the_given_draw():
    # prices 30 and 20: weights 1/900 and 1/400, so cheap is drawn below 900/1300 ≈ 0.69
    assert keys(plan(resolved(BIG), rand=0.5))[0] == "cheap/big"
    assert keys(plan(resolved(BIG), rand=0.8))[0] == "fast/big-v1"


def test_require_parameters_reaches_the_ranking():
    with pytest.raises(NoEndpoint, match="provider.require_parameters"):
        plan(resolved(BIG), {"require_parameters": True}, used=frozenset({"thinking"}))


def test_an_empty_resolution_is_a_programming_error():
    with pytest.raises(ValueError):
        plan([])


# -- with the built-in catalog ------------------------------------------------------------------

def test_builtin_catalog_data_collection_deny_routes_claude_to_bedrock():
    catalog = load_catalog()
    result = build_plan(catalog, [resolve(catalog, "anthropic/claude-opus-4.8")],
                        parse_preferences({"data_collection": "deny"}), now=NOW, rand=0.0)
    assert [a.provider.name for a in result.attempts] == ["amazon-bedrock", "google-vertex"]


def test_builtin_catalog_dated_id_goes_unchanged_to_its_own_vendor_only():
    catalog = load_catalog()
    items = resolve_all(catalog, "claude-sonnet-4-5-20260101:floor", [])
    assert items[0].sort == "price"
    result = build_plan(catalog, items, parse_preferences({"order": ["amazon-bedrock"]}),
                        now=NOW, rand=0.0)
    assert [(a.provider.name, a.upstream_model) for a in result.attempts] == [
        ("amazon-bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("anthropic", "claude-sonnet-4-5-20260101"), ("azure-foundry", "claude-sonnet-4-5"),
        ("google-vertex", "claude-sonnet-4-5@20250929")]


def test_builtin_catalog_max_price_message_names_the_filter_and_the_endpoints():
    catalog = load_catalog()
    with pytest.raises(NoEndpoint) as caught:
        build_plan(catalog, [resolve(catalog, "anthropic/claude-opus-4.8")],
                   parse_preferences({"max_price": {"prompt": 1.0}}), now=NOW, rand=0.0)
    assert str(caught.value) == ("no endpoint of 'anthropic/claude-opus-4.8' satisfies "
                                 "provider.max_price (prompt ≤ 1.0 USD/M); endpoints before that "
                                 "filter: anthropic, amazon-bedrock, google-vertex")


