"""Provider preferences: parsing the `provider` object, what a request uses, and how the
endpoints of one model are filtered and ordered (OpenRouter's provider routing semantics)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.catalog import Endpoint, Model, Pricing
from policies.health import EndpointHealth, ProviderLimits, RoutingView
from policies.preference import (
    InvalidPreferences,
    NoEndpoint,
    Preferences,
    parse_preferences,
    rank_endpoints,
    request_parameters,
)

NOW = 1_000_000.0


def endpoint(provider: str, input: float | None, output: float | None, *,
             retains_prompts: bool = True, zdr: bool = False, quantization: str | None = None,
             parameters: tuple[str, ...] = ("tools",)) -> Endpoint:
    return Endpoint(provider=provider, upstream_model=f"{provider}-model",
                    pricing=Pricing(input, output, None, None, None),
                    retains_prompts=retains_prompts, zdr=zdr, quantization=quantization,
                    context_length=100_000, max_output=8_000,
                    supported_parameters=frozenset(parameters))


def model(*endpoints: Endpoint, model_id: str = "vendor/model-1") -> Model:
    return Model(id=model_id, display_name=model_id, created_at="2026-01-01T00:00:00Z", aliases=(),
                 context_length=100_000, max_output=8_000, input_modalities=("text",),
                 supported_parameters=frozenset(), tokenizer="generic", endpoints=endpoints)


# Totals (input + output) of 1, 2 and 3 USD/M, as in OpenRouter's load-balancing example; listed
# out of price order so that catalog order and price order differ.
ALPHA = endpoint("alpha", 0.5, 0.5, quantization="fp8")
GAMMA = endpoint("gamma", 1.5, 1.5, retains_prompts=False, quantization="bf16",
                 parameters=("tools", "thinking", "top_k"))
BETA = endpoint("beta", 1.0, 1.0, retains_prompts=False, zdr=True,
                parameters=("tools", "thinking"))
MODEL = model(GAMMA, ALPHA, BETA)


def ranked(prefs: Preferences | dict | None = None, *, of: Model = MODEL,
           view: RoutingView = RoutingView.EMPTY, rand: float = 0.0,
           used: frozenset[str] = frozenset(), sort_override: str | None = None) -> list[str]:
    if not isinstance(prefs, Preferences):
        prefs = parse_preferences(prefs)
    result = rank_endpoints(of, prefs, used_parameters=used, view=view, now=NOW, rand=rand,
                            sort_override=sort_override)
    return [e.provider for e in result]


def view_of(**health: EndpointHealth) -> RoutingView:
    return RoutingView(endpoints={f"{name}/{name}-model": h for name, h in health.items()})


def no_endpoint(prefs: dict, **kwargs) -> NoEndpoint:
    with pytest.raises(NoEndpoint) as caught:
        ranked(prefs, **kwargs)
    return caught.value


# -- parse_preferences ----------------------------------------------------------------------------

def test_absent_provider_object_means_the_defaults():
    assert parse_preferences(None) == Preferences()
    assert parse_preferences({}) == Preferences()


def test_every_field_is_read():
    prefs = parse_preferences({
        "order": ["anthropic", "amazon-bedrock"], "allow_fallbacks": False, "only": ["anthropic"],
        "ignore": ["novita"], "sort": "latency", "max_price": {"prompt": 1, "completion": 2.5},
        "require_parameters": True, "data_collection": "deny", "zdr": True,
        "quantizations": ["FP8", "int4"], "preferred_min_throughput": 50,
        "preferred_max_latency": 2.5})
    assert prefs == Preferences(
        order=("anthropic", "amazon-bedrock"), allow_fallbacks=False, only=("anthropic",),
        ignore=("novita",), sort="latency", max_price_prompt=1.0, max_price_completion=2.5,
        require_parameters=True, data_collection="deny", zdr=True, quantizations=("fp8", "int4"),
        preferred_min_throughput=50.0, preferred_max_latency=2.5)


def test_null_fields_take_their_defaults():
    prefs = parse_preferences({"order": None, "allow_fallbacks": None, "sort": None, "zdr": None,
                               "max_price": None, "data_collection": None, "only": None})
    assert prefs == Preferences()


def test_unknown_fields_are_ignored():
    assert parse_preferences({"enforce_distillable_text": True, "sort": "price"}).sort == "price"


def test_a_provider_object_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidPreferences, match=r"^provider: must be an object, got a list$"):
        parse_preferences(["anthropic"])  # type: ignore[arg-type]


def test_unknown_sort_names_the_field_and_the_choices():
    with pytest.raises(InvalidPreferences) as caught:
        parse_preferences({"sort": "cheapest"})
    assert str(caught.value) == "provider.sort: must be one of price, throughput, latency"


def test_sort_object_form_reads_by_and_partition():
    prefs = parse_preferences({"sort": {"by": "throughput", "partition": "none"}})
    assert (prefs.sort, prefs.sort_partition) == ("throughput", "none")
    assert parse_preferences({"sort": {"by": "price"}}).sort_partition == "model"


def test_sort_object_with_a_bad_member_names_it():
    with pytest.raises(InvalidPreferences, match=r"^provider\.sort\.by: must be one of"):
        parse_preferences({"sort": {"by": "speed"}})
    with pytest.raises(InvalidPreferences,
                       match=r"^provider\.sort\.partition: must be one of model, none"):
        parse_preferences({"sort": {"by": "price", "partition": "global"}})


@pytest.mark.parametrize("field, value, message", [
    ("order", "anthropic", "provider.order: must be a list of provider names"),
    ("only", [1, 2], "provider.only: must be a list of provider names"),
    ("ignore", [""], "provider.ignore: must be a list of provider names"),
    ("allow_fallbacks", "no", "provider.allow_fallbacks: must be true or false, got a string"),
    ("require_parameters", 1, "provider.require_parameters: must be true or false, got a number"),
    ("zdr", "yes", "provider.zdr: must be true or false, got a string"),
    ("data_collection", "never", "provider.data_collection: must be one of allow, deny"),
    ("quantizations", "fp8", "provider.quantizations: must be a list of quantization levels"),
])
def test_malformed_fields_are_refused_naming_the_field(field, value, message):
    with pytest.raises(InvalidPreferences) as caught:
        parse_preferences({field: value})
    assert str(caught.value) == message


def test_unknown_quantization_level_is_refused():
    with pytest.raises(InvalidPreferences, match=r"^provider\.quantizations: unknown level 'q3'"):
        parse_preferences({"quantizations": ["fp8", "q3"]})


def test_max_price_accepts_numbers_and_numeric_strings():
    prefs = parse_preferences({"max_price": {"prompt": "1.5", "completion": 3, "request": "0.01"}})
    assert (prefs.max_price_prompt, prefs.max_price_completion) == (1.5, 3.0)


@pytest.mark.parametrize("value, message", [
    ({"prompt": -1}, "provider.max_price.prompt: must be a non-negative number"),
    ({"completion": "cheap"}, "provider.max_price.completion: must be a non-negative number"),
    ({"prompt": True}, "provider.max_price.prompt: must be a non-negative number"),
    (5, "provider.max_price: must be an object"),
])
def test_bad_max_price_names_the_member(value, message):
    with pytest.raises(InvalidPreferences) as caught:
        parse_preferences({"max_price": value})
    assert str(caught.value).startswith(message)


def test_thresholds_accept_a_number_or_percentile_cutoffs():
    assert parse_preferences({"preferred_min_throughput": 40}).preferred_min_throughput == 40.0
    assert parse_preferences({"preferred_max_latency": {"p50": 1.5}}).preferred_max_latency == 1.5


def test_several_cutoffs_reduce_to_the_strictest_for_the_one_measured_figure():
    prefs = parse_preferences({"preferred_min_throughput": {"p50": 100, "p90": 50},
                               "preferred_max_latency": {"p50": 2, "p99": 6}})
    assert (prefs.preferred_min_throughput, prefs.preferred_max_latency) == (100.0, 2.0)


def test_bad_threshold_names_the_percentile():
    with pytest.raises(InvalidPreferences, match=r"^provider\.preferred_max_latency\.p90: must be"):
        parse_preferences({"preferred_max_latency": {"p90": "fast"}})
    with pytest.raises(InvalidPreferences, match=r"^provider\.preferred_min_throughput: must be"):
        parse_preferences({"preferred_min_throughput": -3})


def test_an_empty_only_list_restricts_nothing():
    assert parse_preferences({"only": []}).only is None
    assert ranked({"only": []}, rand=0.0) == ["alpha", "beta", "gamma"]


# -- request_parameters ---------------------------------------------------------------------------

def test_a_plain_text_request_uses_no_parameters():
    body = {"model": "m", "max_tokens": 10, "stream": True, "system": "be brief",
            "messages": [{"role": "user", "content": "hi"}]}
    assert request_parameters(body) == frozenset()


def test_top_level_parameters_are_reported():
    body = {"messages": [], "tools": [{"name": "t", "input_schema": {}}],
            "tool_choice": {"type": "auto"}, "temperature": 0, "top_p": 0.9, "top_k": 5,
            "stop_sequences": ["END"], "metadata": {"user_id": "u"}, "service_tier": "auto",
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert request_parameters(body) == {"tools", "tool_choice", "temperature", "top_p", "top_k",
                                        "stop_sequences", "metadata", "service_tier", "thinking"}


def test_null_empty_and_disabled_values_do_not_count():
    body = {"messages": [], "tools": [], "temperature": None, "stop_sequences": [], "metadata": {},
            "thinking": {"type": "disabled"}}
    assert request_parameters(body) == frozenset()


def test_image_and_document_blocks_are_found_also_inside_tool_results():
    body = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "document", "source": {"type": "base64"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "image", "source": {"type": "base64"}}]}]},
    ]}
    assert request_parameters(body) == {"images", "documents"}


EPHEMERAL = {"type": "ephemeral"}


@pytest.mark.parametrize("body", [
    {"messages": [], "cache_control": EPHEMERAL},
    {"messages": [], "system": [{"type": "text", "text": "s", "cache_control": EPHEMERAL}]},
    {"messages": [], "tools": [{"name": "t", "input_schema": {}, "cache_control": EPHEMERAL}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                "cache_control": {**EPHEMERAL, "ttl": "1h"}}]}]},
])
def test_cache_control_anywhere_is_found(body):
    assert "cache_control" in request_parameters(body)


# -- filters ------------------------------------------------------------------------------------

def test_only_keeps_the_named_providers_case_insensitively():
    assert ranked({"only": ["GAMMA", "Alpha"]}) == ["alpha", "gamma"]


def test_ignore_drops_the_named_providers_case_insensitively():
    assert ranked({"ignore": ["ALPHA"]}) == ["beta", "gamma"]


def test_data_collection_deny_keeps_providers_that_retain_nothing():
    assert ranked({"data_collection": "deny"}) == ["beta", "gamma"]


def test_zdr_keeps_zero_data_retention_endpoints():
    assert ranked({"zdr": True}) == ["beta"]
    assert ranked({"zdr": False}) == ["alpha", "beta", "gamma"]


def test_quantizations_keep_listed_levels_and_unknown_only_when_listed():
    assert ranked({"quantizations": ["fp8"]}) == ["alpha"]
    assert ranked({"quantizations": ["unknown"]}) == ["beta"]
    assert ranked({"quantizations": ["bf16", "unknown"]}) == ["beta", "gamma"]


def test_max_price_compares_prompt_with_input_and_completion_with_output():
    assert ranked({"max_price": {"prompt": 1.0}}) == ["alpha", "beta"]
    assert ranked({"max_price": {"completion": 0.5}}) == ["alpha"]
    assert ranked({"max_price": {"prompt": 10, "completion": 1.2}}) == ["alpha", "beta"]


def test_max_price_excludes_an_endpoint_whose_price_is_unknown():
    unpriced = model(endpoint("dark", None, None), ALPHA)
    assert ranked({"max_price": {"prompt": 100}}, of=unpriced) == ["alpha"]


def test_require_parameters_keeps_endpoints_supporting_everything_used():
    used = frozenset({"tools", "thinking"})
    assert ranked({"require_parameters": True}, used=used) == ["beta", "gamma"]


def test_without_require_parameters_unsupported_parameters_do_not_filter():
    used = frozenset({"thinking", "top_k"})
    assert ranked({}, used=used) == ["alpha", "beta", "gamma"]


def test_require_parameters_with_nothing_used_keeps_everything():
    assert ranked({"require_parameters": True}) == ["alpha", "beta", "gamma"]


def test_allow_fallbacks_false_keeps_only_the_ordered_providers():
    assert ranked({"order": ["gamma", "alpha"], "allow_fallbacks": False}) == ["gamma", "alpha"]


def test_allow_fallbacks_false_without_order_keeps_only_the_top_endpoint():
    assert ranked({"allow_fallbacks": False}, rand=0.0) == ["alpha"]
    assert ranked({"allow_fallbacks": False, "sort": "price"}) == ["alpha"]


# -- NoEndpoint: which filter emptied the list ---------------------------------------------------

def test_max_price_that_empties_the_list_is_named_with_the_endpoints_before_it():
    error = no_endpoint({"max_price": {"prompt": 0.1}})
    assert error.filter == "provider.max_price"
    assert str(error) == ("no endpoint of 'vendor/model-1' satisfies provider.max_price "
                          "(prompt ≤ 0.1 USD/M); endpoints before that filter: gamma, alpha, beta")


@pytest.mark.parametrize("prefs, used, expected", [
    ({"only": ["omega"]}, frozenset(), "provider.only"),
    ({"ignore": ["alpha", "beta", "gamma"]}, frozenset(), "provider.ignore"),
    ({"zdr": True, "quantizations": ["fp8"]}, frozenset(), "provider.quantizations"),
    ({"ignore": ["beta", "gamma"], "data_collection": "deny"}, frozenset(),
     "provider.data_collection"),
    ({"only": ["alpha"], "zdr": True}, frozenset(), "provider.zdr"),
    ({"data_collection": "deny", "require_parameters": True}, frozenset({"documents"}),
     "provider.require_parameters"),
    ({"order": ["omega"], "allow_fallbacks": False}, frozenset(), "provider.allow_fallbacks"),
])
def test_each_filter_names_itself_when_it_empties_the_list(prefs, used, expected):
    assert no_endpoint(prefs, used=used).filter == expected


def test_filters_apply_in_the_documented_order():
    # Both would empty the list; `only` comes first, and ignore then sees only alpha.
    error = no_endpoint({"only": ["alpha"], "ignore": ["alpha"]})
    assert error.filter == "provider.ignore" and error.before == ("alpha",)
    error = no_endpoint({"max_price": {"prompt": 0}, "order": ["omega"], "allow_fallbacks": False})
    assert error.filter == "provider.max_price"


def test_require_parameters_message_says_what_each_endpoint_lacks():
    message = str(no_endpoint({"only": ["alpha", "beta"], "require_parameters": True},
                              used=frozenset({"tools", "top_k"})))
    assert "request uses tools, top_k" in message
    assert "alpha lacks top_k" in message and "beta lacks top_k" in message


def test_a_model_without_endpoints_is_refused_as_not_configured():
    error = no_endpoint({}, of=model())
    assert error.filter == "configured providers"
    assert str(error) == "no configured provider serves model 'vendor/model-1'"


# -- ordering -----------------------------------------------------------------------------------

def test_order_puts_named_providers_first_then_the_rest_by_price():
    assert ranked({"order": ["gamma"]}) == ["gamma", "alpha", "beta"]


def test_order_turns_load_balancing_off():
    for rand in (0.0, 0.5, 0.8, 0.99):
        assert ranked({"order": ["beta"]}, rand=rand) == ["beta", "alpha", "gamma"]
        # also when no ordered provider serves the model: the rest go by price, no draw
        assert ranked({"order": ["omega"]}, rand=rand) == ["alpha", "beta", "gamma"]


def test_order_names_a_provider_that_does_not_serve_the_model_without_harm():
    assert ranked({"order": ["omega", "gamma"]}) == ["gamma", "alpha", "beta"]


def test_sort_price_orders_by_input_plus_output_ascending_without_load_balancing():
    for rand in (0.0, 0.99):
        assert ranked({"sort": "price"}, rand=rand) == ["alpha", "beta", "gamma"]


def test_sort_price_weighs_input_and_output_alike():
    # dear input, cheap output (total 3.0) against the opposite split (total 2.5)
    split = model(endpoint("in-heavy", 2.5, 0.5), endpoint("out-heavy", 0.5, 2.0))
    assert ranked({"sort": "price"}, of=split) == ["out-heavy", "in-heavy"]


def test_sort_price_puts_unknown_prices_last():
    with_unknown = model(endpoint("dark", None, 1.0), GAMMA, ALPHA)
    assert ranked({"sort": "price"}, of=with_unknown) == ["alpha", "gamma", "dark"]


def test_sort_throughput_orders_by_measured_tokens_per_second_unmeasured_last():
    view = view_of(alpha=EndpointHealth(output_tps=40.0, samples=5),
                   gamma=EndpointHealth(output_tps=120.0, samples=5))
    assert ranked({"sort": "throughput"}, view=view) == ["gamma", "alpha", "beta"]


def test_sort_latency_orders_by_measured_time_to_first_token_unmeasured_last():
    view = view_of(alpha=EndpointHealth(ttft_s=1.8, samples=5),
                   beta=EndpointHealth(ttft_s=0.4, samples=5))
    assert ranked({"sort": "latency"}, view=view) == ["beta", "alpha", "gamma"]


def test_sort_override_from_a_model_suffix_wins_over_the_requested_sort():
    view = view_of(gamma=EndpointHealth(output_tps=300.0, samples=3))
    assert ranked({"sort": "price"}, view=view, sort_override="throughput")[0] == "gamma"


def test_sort_applies_to_the_providers_after_the_ordered_ones():
    view = view_of(alpha=EndpointHealth(output_tps=10.0), beta=EndpointHealth(output_tps=90.0),
                   gamma=EndpointHealth(output_tps=50.0))
    assert ranked({"order": ["alpha"], "sort": "throughput"}, view=view) == [
        "alpha", "beta", "gamma"]


# -- default load balancing -----------------------------------------------------------------------
# Weights 1/1², 1/2², 1/3² = 36/49, 9/49, 4/49 of the draw: alpha below 0.7347, beta below 0.9184.

@pytest.mark.parametrize("rand, expected", [
    (0.0, ["alpha", "beta", "gamma"]),
    (0.73, ["alpha", "beta", "gamma"]),
    (0.74, ["beta", "alpha", "gamma"]),
    (0.91, ["beta", "alpha", "gamma"]),
    (0.92, ["gamma", "alpha", "beta"]),
    (0.999, ["gamma", "alpha", "beta"]),
])
def test_load_balancing_draws_the_first_endpoint_by_inverse_square_price(rand, expected):
    assert ranked({}, rand=rand) == expected


def test_load_balancing_makes_the_cheapest_nine_times_likelier_than_three_times_the_price():
    draws = [ranked({}, rand=(i + 0.5) / 4900)[0] for i in range(4900)]
    assert (draws.count("alpha"), draws.count("beta"), draws.count("gamma")) == (3600, 900, 400)


def test_openrouter_example_unhealthy_provider_is_tried_last():
    # A costs 1, B 2, C 3 and B saw outages: A first, then C, then B.
    view = view_of(beta=EndpointHealth(cooldown_until=NOW + 30, cooldown_reason="503", failures=3))
    assert ranked({}, view=view, rand=0.0) == ["alpha", "gamma", "beta"]


def test_load_balancing_draws_only_among_healthy_endpoints():
    view = view_of(alpha=EndpointHealth(cooldown_until=NOW + 30, failures=3))
    assert ranked({}, view=view, rand=0.0) == ["beta", "gamma", "alpha"]


def test_a_free_endpoint_all_but_always_comes_first():
    free = model(ALPHA, endpoint("local", 0.0, 0.0))
    assert ranked({}, of=free, rand=0.999) == ["local", "alpha"]


def test_unknown_prices_join_the_draw_only_when_no_price_is_known():
    mixed = model(endpoint("dark", None, None), BETA)
    assert ranked({}, of=mixed, rand=0.999) == ["beta", "dark"]
    unpriced = model(endpoint("dark", None, None), endpoint("dim", None, None))
    assert ranked({}, of=unpriced, rand=0.0) == ["dark", "dim"]
    assert ranked({}, of=unpriced, rand=0.6) == ["dim", "dark"]


def test_rand_outside_the_unit_interval_is_a_programming_error():
    with pytest.raises(ValueError):
        ranked({}, rand=1.0)


# -- thresholds and health ----------------------------------------------------------------------

def test_endpoints_below_preferred_throughput_move_after_the_others_but_stay():
    view = view_of(alpha=EndpointHealth(output_tps=10.0), gamma=EndpointHealth(output_tps=80.0))
    assert ranked({"preferred_min_throughput": 50, "sort": "price"}, view=view) == [
        "beta", "gamma", "alpha"]


def test_endpoints_above_preferred_latency_move_after_the_others_but_stay():
    view = view_of(alpha=EndpointHealth(ttft_s=3.0), beta=EndpointHealth(ttft_s=0.5))
    assert ranked({"preferred_max_latency": {"p50": 1}, "sort": "price"}, view=view) == [
        "beta", "gamma", "alpha"]


def test_thresholds_move_the_endpoint_out_of_the_load_balancing_draw():
    view = view_of(alpha=EndpointHealth(output_tps=5.0))
    for rand in (0.0, 0.5):
        assert ranked({"preferred_min_throughput": 20}, view=view, rand=rand)[-1] == "alpha"


def test_a_cooling_endpoint_goes_to_the_very_end_even_when_ordered_first():
    view = view_of(gamma=EndpointHealth(cooldown_until=NOW + 10, failures=3))
    assert ranked({"order": ["gamma", "alpha"]}, view=view) == ["alpha", "beta", "gamma"]


def test_a_cooling_endpoint_is_still_a_last_resort():
    cooling = EndpointHealth(cooldown_until=NOW + 10)
    view = view_of(alpha=cooling, beta=cooling, gamma=cooling)
    assert sorted(ranked({}, view=view)) == ["alpha", "beta", "gamma"]


def test_a_half_open_endpoint_follows_the_healthy_ones():
    view = view_of(alpha=EndpointHealth(cooldown_until=NOW - 1, failures=3))
    assert ranked({"sort": "price"}, view=view) == ["beta", "gamma", "alpha"]


def test_an_elapsed_cooldown_counts_as_half_open_and_precedes_a_cooling_one():
    view = view_of(alpha=EndpointHealth(cooldown_until=NOW + 5),
                   beta=EndpointHealth(cooldown_until=NOW))
    assert ranked({"sort": "price"}, view=view) == ["gamma", "beta", "alpha"]


def test_a_provider_near_its_upstream_rate_limit_moves_after_the_others():
    view = RoutingView(providers={"alpha": ProviderLimits(requests_remaining=2, requests_limit=100,
                                                          reset_at=NOW + 20)})
    assert ranked({"sort": "price"}, view=view) == ["beta", "gamma", "alpha"]


def test_a_rate_limit_that_has_already_reset_does_not_move_the_provider():
    view = RoutingView(providers={"alpha": ProviderLimits(tokens_remaining=0, tokens_limit=100_000,
                                                          reset_at=NOW - 1)})
    assert ranked({"sort": "price"}, view=view) == ["alpha", "beta", "gamma"]


def test_near_rate_limit_comes_before_cooling():
    view = RoutingView(
        endpoints={"beta/beta-model": EndpointHealth(cooldown_until=NOW + 60)},
        providers={"alpha": ProviderLimits(tokens_remaining=10, tokens_limit=1000,
                                           reset_at=NOW + 5)})
    assert ranked({"sort": "price"}, view=view) == ["gamma", "alpha", "beta"]


# -- invariants over arbitrary preferences and state -------------------------------------------

_STATES = st.sampled_from([EndpointHealth(), EndpointHealth(cooldown_until=NOW + 9),
                           EndpointHealth(cooldown_until=NOW - 9), EndpointHealth(output_tps=5.0),
                           EndpointHealth(ttft_s=4.0, output_tps=90.0)])


@settings(max_examples=150, deadline=None)
@given(order=st.lists(st.sampled_from(["alpha", "beta", "gamma", "omega"]), unique=True,
                      max_size=3),
       sort=st.sampled_from([None, "price", "throughput", "latency"]),
       states=st.tuples(_STATES, _STATES, _STATES),
       rand=st.floats(min_value=0.0, max_value=0.999999),
       min_tps=st.sampled_from([None, 20.0]))
def test_the_ranking_is_a_permutation_with_cooling_endpoints_last(order, sort, states, rand,
                                                                  min_tps):
    view = view_of(alpha=states[0], beta=states[1], gamma=states[2])
    prefs = Preferences(order=tuple(order), sort=sort, preferred_min_throughput=min_tps)
    result = ranked(prefs, view=view, rand=rand)
    assert sorted(result) == ["alpha", "beta", "gamma"]
    cooling = [view.health(f"{name}/{name}-model").cooldown_until not in (None, NOW - 9)
               for name in result]
    assert cooling == sorted(cooling)
