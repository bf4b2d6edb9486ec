"""Model-id resolution: every accepted form, suffixes, fallback lists and unknown names."""
from __future__ import annotations

import pytest

from policies.catalog import load_catalog
from policies.resolve import UnknownModel, resolve, resolve_all

CATALOG = load_catalog()


def test_router_id_resolves_to_its_model():
    resolved = resolve(CATALOG, "anthropic/claude-sonnet-4.5")
    assert (resolved.model.id, resolved.sort, resolved.native_id) == (
        "anthropic/claude-sonnet-4.5", None, None)


def test_ids_compare_case_insensitively():
    assert resolve(CATALOG, "Anthropic/Claude-Sonnet-4.5").model.id == "anthropic/claude-sonnet-4.5"
    assert resolve(CATALOG, "MINIMAX-M2.5").model.id == "minimax/minimax-m2.5"


def test_native_alias_resolves_without_a_native_id_to_forward():
    resolved = resolve(CATALOG, "claude-sonnet-4-5")
    assert resolved.model.id == "anthropic/claude-sonnet-4.5" and resolved.native_id is None
    anthropic = resolved.model.endpoint("anthropic")
    assert resolved.upstream_model_for(anthropic) == "claude-sonnet-4-5-20250929"


def test_latest_alias_resolves_to_the_newest_model_of_the_family():
    assert resolve(CATALOG, "~anthropic/claude-opus-latest").model.id == "anthropic/claude-opus-4.8"


def test_dated_anthropic_id_resolves_and_is_forwarded_unchanged_to_anthropic_only():
    resolved = resolve(CATALOG, "claude-opus-4-8-20261101")
    assert resolved.model.id == "anthropic/claude-opus-4.8"
    assert resolved.native_id == "claude-opus-4-8-20261101"
    anthropic = resolved.model.endpoint("anthropic")
    bedrock = resolved.model.endpoint("amazon-bedrock")
    assert resolved.upstream_model_for(anthropic) == "claude-opus-4-8-20261101"
    assert resolved.upstream_model_for(bedrock) == bedrock.upstream_model


def test_dated_id_is_kept_exactly_as_the_client_sent_it():
    resolved = resolve(CATALOG, "Claude-Sonnet-4-5-20250929")
    assert resolved.model.id == "anthropic/claude-sonnet-4.5"
    assert resolved.native_id == "Claude-Sonnet-4-5-20250929"


def test_dated_openai_id_with_dashed_date_resolves():
    resolved = resolve(CATALOG, "gpt-5.4-2026-03-05")
    assert resolved.model.id == "openai/gpt-5.4"
    assert resolved.upstream_model_for(resolved.model.endpoints[0]) == "gpt-5.4-2026-03-05"


def test_router_id_with_a_date_resolves_but_is_not_forwarded():
    resolved = resolve(CATALOG, "anthropic/claude-opus-4.8-20261101")
    assert resolved.model.id == "anthropic/claude-opus-4.8" and resolved.native_id is None


def test_dated_id_of_an_unknown_model_is_unknown():
    with pytest.raises(UnknownModel):
        resolve(CATALOG, "claude-opus-9-20261101")


@pytest.mark.parametrize("name", ["anthropic/claude-sonnet-4.5", "claude-sonnet-4-5",
                                  "claude-sonnet-4-5-20250929", "~anthropic/claude-sonnet-latest"])
def test_floor_suffix_sorts_by_price_on_every_form_of_id(name):
    resolved = resolve(CATALOG, f"{name}:floor")
    assert resolved.sort == "price"
    assert resolved.model.vendor == "anthropic" and "sonnet" in resolved.model.id


@pytest.mark.parametrize("name", ["openai/gpt-5.4", "gpt-5.4", "gpt-5.4-2026-03-05"])
def test_nitro_suffix_sorts_by_throughput_on_every_form_of_id(name):
    resolved = resolve(CATALOG, f"{name}:nitro")
    assert (resolved.model.id, resolved.sort) == ("openai/gpt-5.4", "throughput")


def test_suffix_compares_case_insensitively_and_leaves_the_native_id_clean():
    resolved = resolve(CATALOG, "claude-haiku-4-5-20251001:NITRO")
    assert resolved.sort == "throughput" and resolved.native_id == "claude-haiku-4-5-20251001"


def test_unknown_model_suggests_up_to_three_close_ids():
    with pytest.raises(UnknownModel) as caught:
        resolve(CATALOG, "claude-opus-9")
    error = caught.value
    assert error.requested == "claude-opus-9"
    assert error.suggestions == ("anthropic/claude-opus-4.8", "anthropic/claude-opus-4.6",
                                 "anthropic/claude-opus-4.5")
    assert str(error) == ("model 'claude-opus-9' not found; did you mean "
                          "'anthropic/claude-opus-4.8', 'anthropic/claude-opus-4.6', "
                          "'anthropic/claude-opus-4.5'?")
    assert isinstance(error, LookupError)


def test_unknown_model_with_nothing_close_gets_a_plain_message():
    with pytest.raises(UnknownModel) as caught:
        resolve(CATALOG, "zzzzzz")
    assert caught.value.suggestions == ()
    assert str(caught.value) == "model 'zzzzzz' not found"


def test_unknown_suffix_is_part_of_an_unknown_name():
    with pytest.raises(UnknownModel) as caught:
        resolve(CATALOG, "gpt-5.5:free")
    assert caught.value.suggestions[0] == "openai/gpt-5.5"


def test_resolve_all_keeps_the_primary_then_the_fallbacks_in_order():
    chain = resolve_all(CATALOG, "claude-opus-4-8", ["gpt-5.5:floor", "gemini-3.5-flash"])
    assert [r.model.id for r in chain] == [
        "anthropic/claude-opus-4.8", "openai/gpt-5.5", "google/gemini-3.5-flash"]
    assert chain[1].sort == "price"


def test_resolve_all_drops_repeats_of_a_model_keeping_the_first():
    chain = resolve_all(CATALOG, "claude-sonnet-4-5-20250929",
                        ["anthropic/claude-sonnet-4.5:nitro", "gpt-5.4", "claude-sonnet-4-5"])
    assert [r.model.id for r in chain] == ["anthropic/claude-sonnet-4.5", "openai/gpt-5.4"]
    assert chain[0].native_id == "claude-sonnet-4-5-20250929" and chain[0].sort is None


def test_resolve_all_refuses_an_unknown_fallback():
    with pytest.raises(UnknownModel, match="'gpt-9' not found"):
        resolve_all(CATALOG, "gpt-5.5", ["gpt-9"])


def test_dated_id_listed_as_an_alias_is_still_forwarded_as_sent():
    catalog = load_catalog([{"id": "anthropic/claude-sonnet-4.5",
                             "aliases": ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"]}])
    resolved = resolve(catalog, "claude-sonnet-4-5-20250929")
    assert resolved.native_id == "claude-sonnet-4-5-20250929"
    assert resolve(catalog, "claude-sonnet-4-5").native_id is None


def test_model_map_sends_a_name_and_its_dated_forms_to_its_target_keeping_the_suffix():
    catalog = load_catalog()
    mapped = {"claude-haiku-4-5": "anthropic/claude-opus-4.8"}
    for asked in ("claude-haiku-4-5", "CLAUDE-HAIKU-4-5", "claude-haiku-4-5-20251001"):
        hit = resolve(catalog, asked, mapped)
        assert (hit.model.id, hit.native_id) == ("anthropic/claude-opus-4.8", None)
    assert resolve(catalog, "claude-haiku-4-5:floor", mapped).sort == "price"
    assert resolve(catalog, "claude-haiku-4-5", {}).model.id == "anthropic/claude-haiku-4.5"
